// Building and reading the dictionaries that state_dict()s and checkpoints are made of
// (c10::impl::GenericDict with string keys, which Python's torch.load returns as a dict).
// Readers throw std::invalid_argument naming where the value was expected ("lr_scheduler.last_batch_iteration").
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

namespace ds::ivalue {

using Dict = c10::impl::GenericDict;
using List = c10::impl::GenericList;

Dict new_dict();                     // string -> any
List new_list();                     // any
List double_list(const std::vector<double>& v);
List string_list(const std::vector<std::string>& v);
List int_list(const std::vector<int64_t>& v);

bool has(const Dict& d, const std::string& key);
const at::IValue& field(const Dict& d, const std::string& key, const std::string& where);
Dict get_dict(const Dict& d, const std::string& key, const std::string& where);
List get_list(const Dict& d, const std::string& key, const std::string& where);
double get_double(const Dict& d, const std::string& key, const std::string& where);  // int accepted
int64_t get_int(const Dict& d, const std::string& key, const std::string& where);
bool get_bool(const Dict& d, const std::string& key, const std::string& where);
std::string get_string(const Dict& d, const std::string& key, const std::string& where);
at::Tensor get_tensor(const Dict& d, const std::string& key, const std::string& where);
std::vector<double> to_doubles(const List& l, const std::string& where);
std::vector<int64_t> to_ints(const List& l, const std::string& where);
std::vector<std::string> to_strings(const List& l, const std::string& where);
Dict as_dict(const at::IValue& v, const std::string& where);

// A deep copy with every tensor moved to the CPU (checkpoints are device independent).
at::IValue to_cpu(const at::IValue& v);

}  // namespace ds::ivalue
