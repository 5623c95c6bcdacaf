#include "engine/ivalue_util.h"

#include <stdexcept>

namespace ds::ivalue {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

std::string join(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

}  // namespace

Dict new_dict() { return Dict(c10::StringType::get(), c10::AnyType::get()); }
List new_list() { return List(c10::AnyType::get()); }

List double_list(const std::vector<double>& v) {
  List l = new_list();
  for (double x : v) l.push_back(x);
  return l;
}
List string_list(const std::vector<std::string>& v) {
  List l = new_list();
  for (const auto& x : v) l.push_back(x);
  return l;
}
List int_list(const std::vector<int64_t>& v) {
  List l = new_list();
  for (int64_t x : v) l.push_back(x);
  return l;
}

bool has(const Dict& d, const std::string& key) { return d.contains(key); }

const at::IValue& field(const Dict& d, const std::string& key, const std::string& where) {
  auto it = d.find(key);
  if (it == d.end()) fail(join(where, key), "missing");
  return it->value();
}

Dict as_dict(const at::IValue& v, const std::string& where) {
  if (!v.isGenericDict()) fail(where, std::string("expected a dict, found ") + v.tagKind());
  return v.toGenericDict();
}

Dict get_dict(const Dict& d, const std::string& key, const std::string& where) {
  return as_dict(field(d, key, where), join(where, key));
}

List get_list(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isList()) return v.toList();
  if (v.isTuple()) {
    List l = new_list();
    for (const auto& e : v.toTupleRef().elements()) l.push_back(e);
    return l;
  }
  if (v.isDoubleList() || v.isIntList() || v.isBoolList() || v.isTensorList()) return v.toList();
  fail(join(where, key), std::string("expected a list, found ") + v.tagKind());
}

double get_double(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isDouble()) return v.toDouble();
  if (v.isInt()) return static_cast<double>(v.toInt());
  fail(join(where, key), std::string("expected a number, found ") + v.tagKind());
}

int64_t get_int(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isInt()) return v.toInt();
  fail(join(where, key), std::string("expected an int, found ") + v.tagKind());
}

bool get_bool(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isBool()) return v.toBool();
  fail(join(where, key), std::string("expected a bool, found ") + v.tagKind());
}

std::string get_string(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isString()) return v.toStringRef();
  fail(join(where, key), std::string("expected a string, found ") + v.tagKind());
}

at::Tensor get_tensor(const Dict& d, const std::string& key, const std::string& where) {
  const at::IValue& v = field(d, key, where);
  if (v.isTensor()) return v.toTensor();
  fail(join(where, key), std::string("expected a tensor, found ") + v.tagKind());
}

std::vector<double> to_doubles(const List& l, const std::string& where) {
  std::vector<double> out;
  for (size_t i = 0; i < l.size(); ++i) {
    const at::IValue v = l.get(i);
    if (v.isDouble()) {
      out.push_back(v.toDouble());
    } else if (v.isInt()) {
      out.push_back(static_cast<double>(v.toInt()));
    } else {
      fail(where + "[" + std::to_string(i) + "]", std::string("expected a number, found ") + v.tagKind());
    }
  }
  return out;
}

std::vector<int64_t> to_ints(const List& l, const std::string& where) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < l.size(); ++i) {
    const at::IValue v = l.get(i);
    if (!v.isInt()) fail(where + "[" + std::to_string(i) + "]", std::string("expected an int, found ") + v.tagKind());
    out.push_back(v.toInt());
  }
  return out;
}

std::vector<std::string> to_strings(const List& l, const std::string& where) {
  std::vector<std::string> out;
  for (size_t i = 0; i < l.size(); ++i) {
    const at::IValue v = l.get(i);
    if (!v.isString()) fail(where + "[" + std::to_string(i) + "]", std::string("expected a string, found ") + v.tagKind());
    out.push_back(v.toStringRef());
  }
  return out;
}

at::IValue to_cpu(const at::IValue& v) {
  if (v.isTensor()) return v.toTensor().detach().to(at::kCPU).contiguous();
  if (v.isGenericDict()) {
    const Dict in = v.toGenericDict();
    Dict out(in.keyType(), in.valueType());
    for (const auto& e : in) out.insert(e.key(), to_cpu(e.value()));
    return out;
  }
  if (v.isList()) {
    const List in = v.toList();
    List out(in.elementType());
    for (size_t i = 0; i < in.size(); ++i) out.push_back(to_cpu(in.get(i)));
    return out;
  }
  return v;
}

}  // namespace ds::ivalue
