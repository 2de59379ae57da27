// ctl_document: the configuration files of `portrelay ctl export` and `apply`, in JSON or YAML.
#pragma once

#include "api/ctl_output.hpp"

#include <string>
#include <string_view>

namespace api {

// Whether a file name says YAML: it ends in .yaml or .yml.
bool is_yaml_name(std::string_view path);

// A YAML document as the JSON it means. Quoted scalars are strings; plain ones are null, booleans,
// integers, floats or strings as YAML 1.2's core schema reads them. A key given twice in one mapping
// is an error, as it is in the API's JSON. Errors are std::runtime_error naming the line.
ctl_json yaml_to_json(const std::string& text);

// The JSON document as YAML (block style) that yaml_to_json reads back to the same JSON: a string
// that would read as another type ("80", "true", "null") is quoted.
std::string json_to_yaml(const ctl_json& doc);

// The request body for a file's text: YAML (by its name, or when the text does not start with "{")
// converted to JSON; JSON passed as it is, so the API's own checks (duplicate keys) see what the
// file says.
std::string document_body(const std::string& text, std::string_view path);

}  // namespace api
