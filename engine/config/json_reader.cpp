#include "engine/config/json_reader.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

namespace ds::config_detail {
namespace {

// Builds the DOM from SAX events, with the path of every open container, so duplicate keys can be
// reported where they are. Pointers to open containers stay valid: a container only grows while
// it is the innermost open one, and then no pointer to its elements is held.
class DomBuilder {
 public:
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  DomBuilder(std::string_view text, Issues& issues, std::string root_path)
      : text_(text), issues_(issues), root_path_(std::move(root_path)) {}

  bool null() { return put(Json(nullptr)); }
  bool boolean(bool v) { return put(Json(v)); }
  bool number_integer(number_integer_t v) { return put(Json(v)); }
  bool number_unsigned(number_unsigned_t v) { return put(Json(v)); }
  bool number_float(number_float_t v, const string_t&) { return put(Json(v)); }
  bool string(string_t& v) { return put(Json(std::move(v))); }
  bool binary(binary_t& v) { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(Json::object()); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    Frame& top = stack_.back();
    if (top.node->contains(k)) {
      issues_.error(join_path(top.path, k),
                    "duplicate key " + in_quotes(k) +
                        " (DeepSpeed also rejects duplicate keys; the later value is used to check the rest)");
    }
    top.key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    // Line and column of the offending character (position counts the characters read, 1-based).
    size_t at = std::min(position > 0 ? position - 1 : 0, text_.size());
    size_t line = 1 + static_cast<size_t>(std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
    size_t newline = at == 0 ? std::string_view::npos : text_.rfind('\n', at - 1);
    size_t column = newline == std::string_view::npos ? at + 1 : at - newline;
    // nlohmann's text is "[json.exception.parse_error.101] parse error at line L, column C: <why>";
    // keep <why>, our own line/column go in front.
    std::string why = ex.what();
    size_t p = why.find("syntax error");
    if (p == std::string::npos) p = why.find("attempting");
    if (p == std::string::npos && why.rfind("[json.exception.", 0) == 0 && why.find("] ") != std::string::npos) {
      p = why.find("] ") + 2;  // e.g. "number overflow parsing '1e999'"
    }
    if (p != std::string::npos) why = why.substr(p);
    issues_.error("", "invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + why);
    syntax_error_ = true;
    return false;
  }

  bool failed() const { return syntax_error_; }
  Json take() { return std::move(root_); }

 private:
  struct Frame {
    Json* node;
    std::string path;
    std::string key;  // the pending key of an object
  };

  std::string child_path() const {
    if (stack_.empty()) return root_path_;
    const Frame& top = stack_.back();
    if (top.node->is_array()) return top.path + "[" + std::to_string(top.node->size()) + "]";
    return join_path(top.path, top.key);
  }

  Json* place(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& top = stack_.back();
    if (top.node->is_array()) {
      top.node->push_back(std::move(v));
      return &top.node->back();
    }
    Json& slot = (*top.node)[top.key];
    slot = std::move(v);
    return &slot;
  }

  bool put(Json v) {
    place(std::move(v));
    return true;
  }

  bool open(Json container) {
    std::string path = child_path();
    if (stack_.size() >= static_cast<size_t>(kMaxDepth)) {
      issues_.error(path, "invalid JSON: nested deeper than " + std::to_string(kMaxDepth) +
                              " levels (a DeepSpeed config needs at most 4)");
      syntax_error_ = true;
      return false;
    }
    Json* node = place(std::move(container));
    stack_.push_back({node, std::move(path), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  std::string_view text_;
  Issues& issues_;
  std::string root_path_;
  Json root_;
  std::vector<Frame> stack_;
  bool syntax_error_ = false;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions of
// neighbours ("Adma" -> "Adam") cost 1 each.
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string truncate(std::string s, size_t n) {
  if (s.size() > n) s = s.substr(0, n) + "...";
  return s;
}

std::string scalar_text(const Json& v) {
  if (v.is_number_float() && !std::isfinite(v.get<double>())) return "a number out of range";
  return v.dump();
}

}  // namespace

std::optional<Json> read_json(std::string_view text, Issues& issues, const std::string& root_path) {
  DomBuilder builder(text, issues, root_path);
  bool ok = false;
  try {
    // Comments are allowed: DeepSpeed reads its config with hjson, which accepts them.
    ok = Json::sax_parse(text.begin(), text.end(), &builder, Json::input_format_t::json, /*strict=*/true,
                         /*ignore_comments=*/true);
  } catch (const std::exception& e) {
    // The SAX parser reports syntax errors through parse_error(); anything else (should not happen)
    // still becomes an error, never an escaping exception.
    issues.error("", std::string("invalid JSON: ") + e.what());
    return std::nullopt;
  }
  if (!ok || builder.failed()) {
    if (!builder.failed()) issues.error("", "invalid JSON");
    return std::nullopt;
  }
  return builder.take();
}

const char* kind_of(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "an integer";
    case Json::value_t::number_float: return "a number";
    case Json::value_t::string: return "a string";
    case Json::value_t::array: return "an array";
    case Json::value_t::object: return "an object";
    default: return "a binary value";
  }
}

std::string preview(const Json& v) {
  constexpr size_t kMax = 60;
  if (v.is_object()) return "an object with " + std::to_string(v.size()) + (v.size() == 1 ? " key" : " keys");
  if (v.is_array()) {
    // Only flat arrays are rendered: no recursion into nested values.
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      const Json& e = v[i];
      if (e.is_structured() || s.size() > kMax) {
        return "an array of " + std::to_string(v.size()) + (v.size() == 1 ? " element" : " elements");
      }
      s += (i ? ", " : "") + scalar_text(e);
    }
    return truncate(s + "]", kMax);
  }
  if (v.is_binary()) return "a binary value";
  return truncate(scalar_text(v), kMax);
}

std::string join_path(const std::string& base, const std::string& key) {
  return base.empty() ? key : base + "." + key;
}

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

std::string nearest(const std::string& key, const std::vector<std::string>& candidates) {
  const std::string k = lower(key);
  if (k.empty() || k.size() > 100) return "";  // no plausible typo of a config key
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    size_t d = edit_distance(k, lower(c));
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  const size_t limit = std::max<size_t>(1, std::min<size_t>(3, k.size() / 4));
  if (!best.empty() && best_d <= limit) return best;
  // A fragment of a longer key ("accumulation_steps" for "gradient_accumulation_steps").
  if (k.size() >= 5) {
    for (const std::string& c : candidates) {
      const std::string lc = lower(c);
      if (lc.find(k) != std::string::npos || (lc.size() >= 5 && k.find(lc) != std::string::npos)) return c;
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
Section::Section(const Json& obj, std::string path, Issues& issues)
    : obj_(obj), path_(std::move(path)), issues_(issues), errors_at_start_(issues.errors.size()) {}

bool Section::known(const std::string& key) const {
  return std::find(known_.begin(), known_.end(), key) != known_.end();
}

const Json* Section::raw(const std::string& key) {
  if (!known(key)) known_.push_back(key);
  auto it = obj_.find(key);
  return it == obj_.end() ? nullptr : &*it;
}

void Section::also_suggest(const std::vector<std::string>& keys) {
  suggest_only_.insert(suggest_only_.end(), keys.begin(), keys.end());
}

void Section::bad_at(const std::string& path, const Json& value, const std::string& expect) {
  std::string msg = "got " + preview(value) + ", expected " + expect;
  if (value.is_string() && value.get_ref<const std::string&>() == "auto") {
    msg += " (\"auto\" is filled in by the HuggingFace Trainer integration, not by DeepSpeed: write the value)";
  }
  issues_.error(path, std::move(msg));
}

void Section::bad(const std::string& key, const Json& value, const std::string& expect) {
  bad_at(key_path(key), value, expect);
}

std::optional<int64_t> Section::as_integer(const Json& v) const {
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    // 1e3 or 64.0 mean the integer, as they do for Python; anything fractional does not.
    double d = v.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e18) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

std::optional<bool> Section::boolean(const std::string& key) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (v->is_boolean()) return v->get<bool>();
  bad(key, *v, "true or false");
  return std::nullopt;
}

std::optional<int64_t> Section::integer(const std::string& key, const std::function<bool(int64_t)>& ok,
                                        const std::string& expect, bool nullable) {
  const Json* v = raw(key);
  if (!v || (nullable && v->is_null())) return std::nullopt;
  std::optional<int64_t> i = as_integer(*v);
  if (i && ok(*i)) return i;
  bad(key, *v, expect);
  return std::nullopt;
}

std::optional<uint64_t> Section::unsigned_integer(const std::string& key, const std::string& expect) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  std::optional<int64_t> i = as_integer(*v);
  if (i && *i >= 0) return static_cast<uint64_t>(*i);
  bad(key, *v, expect);
  return std::nullopt;
}

std::optional<double> Section::number(const std::string& key, const std::function<bool(double)>& ok,
                                      const std::string& expect) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (v->is_number()) {
    double d = v->get<double>();
    if (std::isfinite(d) && ok(d)) return d;
  }
  bad(key, *v, expect);
  return std::nullopt;
}

std::optional<std::string> Section::string(const std::string& key, const std::string& expect) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  bad(key, *v, expect);
  return std::nullopt;
}

std::optional<std::string> Section::choice(const std::string& key, const std::vector<std::string>& choices,
                                           bool ignore_case) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  std::string list;
  for (size_t i = 0; i < choices.size(); ++i) list += (i ? (i + 1 == choices.size() ? " or " : ", ") : "") + in_quotes(choices[i]);
  if (!v->is_string()) {
    bad(key, *v, list);
    return std::nullopt;
  }
  const std::string& s = v->get_ref<const std::string&>();
  for (const std::string& c : choices) {
    if (ignore_case ? lower(s) == lower(c) : s == c) return c;
  }
  std::string msg = "got " + preview(*v) + ", expected " + list;
  std::string near = nearest(s, choices);
  if (!near.empty()) msg += "; did you mean " + in_quotes(near) + "?";
  issues_.error(key_path(key), msg);
  return std::nullopt;
}

std::optional<std::vector<int64_t>> Section::int_list(const std::string& key, const std::function<bool(int64_t)>& ok,
                                                      const std::string& expect, bool allow_empty, bool nullable) {
  const Json* v = raw(key);
  if (!v || (nullable && v->is_null())) return std::nullopt;
  if (!v->is_array() || (!allow_empty && v->empty())) {
    bad(key, *v, std::string(allow_empty ? "a list of " : "a non-empty list of ") + expect);
    return std::nullopt;
  }
  std::vector<int64_t> out;
  bool good = true;
  for (size_t i = 0; i < v->size(); ++i) {
    std::optional<int64_t> e = as_integer((*v)[i]);
    if (!e || !ok(*e)) {
      bad_at(key_path(key) + "[" + std::to_string(i) + "]", (*v)[i], expect);
      good = false;
    } else {
      out.push_back(*e);
    }
  }
  if (!good) return std::nullopt;
  return out;
}

std::optional<std::vector<double>> Section::number_or_list(const std::string& key, const std::function<bool(double)>& ok,
                                                           const std::string& expect) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (v->is_number()) {
    double d = v->get<double>();
    if (std::isfinite(d) && ok(d)) return std::vector<double>{d};
    bad(key, *v, expect);
    return std::nullopt;
  }
  if (!v->is_array() || v->empty()) {
    bad(key, *v, expect + ", or a non-empty list of them (one per parameter group)");
    return std::nullopt;
  }
  std::vector<double> out;
  bool good = true;
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& e = (*v)[i];
    if (e.is_number() && std::isfinite(e.get<double>()) && ok(e.get<double>())) {
      out.push_back(e.get<double>());
    } else {
      bad_at(key_path(key) + "[" + std::to_string(i) + "]", e, expect);
      good = false;
    }
  }
  if (!good) return std::nullopt;
  return out;
}

std::optional<std::vector<double>> Section::number_list(const std::string& key, size_t size,
                                                        const std::function<bool(double)>& ok, const std::string& expect) {
  const Json* v = raw(key);
  if (!v) return std::nullopt;
  if (!v->is_array() || v->size() != size) {
    bad(key, *v, "a list of " + std::to_string(size) + " numbers, each " + expect);
    return std::nullopt;
  }
  std::vector<double> out;
  bool good = true;
  for (size_t i = 0; i < size; ++i) {
    const Json& e = (*v)[i];
    if (e.is_number() && std::isfinite(e.get<double>()) && ok(e.get<double>())) {
      out.push_back(e.get<double>());
    } else {
      bad_at(key_path(key) + "[" + std::to_string(i) + "]", e, expect);
      good = false;
    }
  }
  if (!good) return std::nullopt;
  return out;
}

const Json* Section::object(const std::string& key) {
  const Json* v = raw(key);
  if (!v) return nullptr;
  if (v->is_object()) return v;
  bad(key, *v, "an object");
  return nullptr;
}

std::vector<std::string> Section::unread_keys() const {
  std::vector<std::string> out;
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    if (!known(it.key())) out.push_back(it.key());
  }
  return out;
}

void Section::finish(const std::string& why) {
  std::vector<std::string> candidates = known_;
  candidates.insert(candidates.end(), suggest_only_.begin(), suggest_only_.end());
  for (const std::string& key : unread_keys()) {
    std::string msg = "unknown key " + in_quotes(key);
    std::string near = nearest(key, candidates);
    if (near == key) {
      // A name of a sibling section or type (e.g. another scheduler's parameter): `why` explains.
    } else if (!near.empty()) {
      msg += "; did you mean " + in_quotes(near) + "?";
    } else if (!known_.empty() && known_.size() <= 12) {
      msg += "; known keys: ";
      for (size_t i = 0; i < known_.size(); ++i) msg += (i ? ", " : "") + known_[i];
    }
    if (!why.empty()) msg += " " + why;
    issues_.error(key_path(key), msg);
  }
}

}  // namespace ds::config_detail
