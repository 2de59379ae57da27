// result: a value or the error that prevented it, for module boundaries that must not throw.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace relay {

// An error with the OS code that caused it and a sentence for people ("bind 0.0.0.0:80: Permission denied").
struct op_error {
  std::error_code code;
  std::string message;
};

template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}
  result(op_error error) : v_(std::move(error)) {}

  explicit operator bool() const { return v_.index() == 0; }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  const op_error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, op_error> v_;
};

}  // namespace relay
