// ctl_document: YAML to JSON and back for configuration files, with YAML 1.2 core-schema scalars.
#include "api/ctl_document.hpp"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <regex>
#include <stdexcept>

namespace api {

namespace {

// A plain scalar as the core schema reads it; decimal integers only (0x and 0o stay strings).
ctl_json plain_scalar(const std::string& s) {
  static const std::regex null_re("~|null|Null|NULL|");
  static const std::regex int_re("[-+]?[0-9]+");
  static const std::regex float_re(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
  if (std::regex_match(s, null_re)) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (std::regex_match(s, int_re)) {
    const char* first = s.data() + (s[0] == '+' ? 1 : 0);
    const char* last = s.data() + s.size();
    if (s[0] != '-') {
      std::uint64_t u = 0;
      if (auto [end, ec] = std::from_chars(first, last, u); ec == std::errc() && end == last) return u;
    } else {
      std::int64_t i = 0;
      if (auto [end, ec] = std::from_chars(first, last, i); ec == std::errc() && end == last) return i;
    }
    return std::stod(s);  // past 64 bits, as JSON parsers read such a number
  }
  if (std::regex_match(s, float_re)) return std::stod(s);
  return s;
}

ctl_json convert(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Scalar:
      // "!" marks a quoted scalar, "?" a plain one; an explicit !!str is a string too.
      if (node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str") return node.Scalar();
      return plain_scalar(node.Scalar());
    case YAML::NodeType::Sequence: {
      auto out = ctl_json::array();
      for (const auto& item : node) out.push_back(convert(item));
      return out;
    }
    case YAML::NodeType::Map: {
      auto out = ctl_json::object();
      for (const auto& pair : node) {
        if (!pair.first.IsScalar()) {
          throw std::runtime_error("line " + std::to_string(pair.first.Mark().line + 1) + ": a key must be a scalar");
        }
        const auto key = pair.first.Scalar();
        if (out.contains(key)) {
          throw std::runtime_error("line " + std::to_string(pair.first.Mark().line + 1) + ": key '" + key +
                                   "' given twice in one mapping");
        }
        out[key] = convert(pair.second);
      }
      return out;
    }
  }
  return nullptr;
}

void emit(YAML::Emitter& out, const ctl_json& v) {
  if (v.empty() && v.is_structured()) out << YAML::Flow;  // "allow: []" rather than "[]" on a line of its own
  if (v.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [key, value] : v.items()) {
      out << YAML::Key;
      emit(out, key);
      out << YAML::Value;
      emit(out, value);
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    out << YAML::BeginSeq;
    for (const auto& item : v) emit(out, item);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (plain_scalar(s).is_string()) out << s;
    else out << YAML::DoubleQuoted << s;
  } else if (v.is_null()) {
    out << YAML::Null;
  } else {
    out << v.dump();  // numbers and booleans as JSON writes them, which the core schema reads back
  }
}

}  // namespace

bool is_yaml_name(std::string_view path) { return path.ends_with(".yaml") || path.ends_with(".yml"); }

ctl_json yaml_to_json(const std::string& text) {
  try {
    return convert(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) throw std::runtime_error(e.msg);
    throw std::runtime_error("line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1) +
                             ": " + e.msg);
  }
}

std::string json_to_yaml(const ctl_json& doc) {
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  emit(out, doc);
  if (!out.good()) throw std::runtime_error("cannot write YAML: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

std::string document_body(const std::string& text, std::string_view path) {
  const auto first = text.find_first_not_of(" \t\r\n");
  const bool json = !is_yaml_name(path) && (path.ends_with(".json") || (first != std::string::npos && text[first] == '{'));
  if (!json) return yaml_to_json(text).dump();
  // Sent as written (the API's own duplicate-key check applies), but a syntax error is told here,
  // with its line and column, rather than as the API's "not valid JSON".
  try {
    const auto checked = nlohmann::json::parse(text);
    static_cast<void>(checked);
  } catch (const nlohmann::json::parse_error& e) {
    const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    const auto at = what.find("parse error");
    throw std::runtime_error("not valid JSON: " + (at == std::string::npos ? what : what.substr(at)));
  }
  return text;
}

}  // namespace api
