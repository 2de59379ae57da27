// etcd_wire: the JSON gateway's encoding of rpc.proto messages.
#include "store/etcd_wire.hpp"

#include <openssl/evp.h>

#include <charconv>

namespace store::etcd::wire {

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string unbase64(std::string_view text) {
  if (text.size() % 4 != 0) throw bad_answer("not base64 (length " + std::to_string(text.size()) + ")");
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) throw bad_answer("not base64");
  // EVP_DecodeBlock counts the padding as zero bytes of output.
  std::size_t padding = 0;
  for (auto i = text.size(); i > 0 && text[i - 1] == '=' && padding < 2; --i) ++padding;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

std::string bytes_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) throw bad_answer(std::string(name) + " is not a string");
  return unbase64(it->get_ref<const std::string&>());
}

std::int64_t int_field(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (it->is_string()) {
    const auto& text = it->get_ref<const std::string&>();
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && !text.empty()) return value;
  }
  throw bad_answer(std::string(name) + " is not an int64: " + it->dump());
}

key_value to_key_value(const json& kv) {
  return {bytes_field(kv, "key"),           bytes_field(kv, "value"),        int_field(kv, "create_revision"),
          int_field(kv, "mod_revision"),    int_field(kv, "version"),        int_field(kv, "lease")};
}

range_result to_range_result(const json& response, std::int64_t fallback_revision) {
  range_result r;
  const auto header = response.find("header");
  r.revision = header != response.end() ? int_field(*header, "revision") : 0;
  if (r.revision == 0) r.revision = fallback_revision;
  if (const auto kvs = response.find("kvs"); kvs != response.end() && kvs->is_array()) {
    for (const auto& kv : *kvs) r.kvs.push_back(to_key_value(kv));
  }
  return r;
}

json range_request(const std::string& key, const std::string& range_end, std::int64_t revision) {
  json r{{"key", base64(key)}};
  if (!range_end.empty()) r["range_end"] = base64(range_end);
  if (revision != 0) r["revision"] = std::to_string(revision);
  return r;
}

json put_request(const std::string& key, const std::string& value, std::int64_t lease) {
  json r{{"key", base64(key)}, {"value", base64(value)}};
  if (lease != 0) r["lease"] = std::to_string(lease);
  return r;
}

json delete_request(const std::string& key, const std::string& range_end) {
  json r{{"key", base64(key)}};
  if (!range_end.empty()) r["range_end"] = base64(range_end);
  return r;
}

namespace {

json compare_json(const compare& c) {
  static const char* const results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
  json r{{"key", base64(c.key)}, {"result", results[static_cast<int>(c.op)]}};
  if (!c.range_end.empty()) r["range_end"] = base64(c.range_end);
  // Each target's name and the field that holds what it is compared with (an int64 but for VALUE).
  static const char* const targets[][2] = {
      {"VERSION", "version"}, {"CREATE", "create_revision"}, {"MOD", "mod_revision"}, {"VALUE", "value"}};
  const auto& [target, field] = targets[static_cast<int>(c.what)];
  r["target"] = target;
  r[field] = c.what == compare::target::value ? base64(c.value) : std::to_string(c.number);
  return r;
}

json operation_json(const operation& op) {
  switch (op.type) {
    case operation::kind::put:
      return {{"request_put", put_request(op.key, op.value, op.lease)}};
    case operation::kind::delete_range:
      return {{"request_delete_range", delete_request(op.key, op.range_end)}};
    case operation::kind::range:
      break;
  }
  return {{"request_range", range_request(op.key, op.range_end, 0)}};
}

}  // namespace

json txn_request(const std::vector<compare>& compares, const std::vector<operation>& success,
                 const std::vector<operation>& failure) {
  json r{{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& c : compares) r["compare"].push_back(compare_json(c));
  for (const auto& op : success) r["success"].push_back(operation_json(op));
  for (const auto& op : failure) r["failure"].push_back(operation_json(op));
  return r;
}

json watch_create_request(const std::string& key, const std::string& range_end, std::int64_t start_revision) {
  // progress_notify: etcd sends an empty batch now and then (every 10 minutes by default), so that a
  // peer gone without a word ends the watch by the read timeout instead of never.
  json create{{"key", base64(key)}, {"progress_notify", true}};
  if (!range_end.empty()) create["range_end"] = base64(range_end);
  if (start_revision != 0) create["start_revision"] = std::to_string(start_revision);
  return {{"create_request", create}};
}

int error_code(const json& answer) {
  if (!answer.is_object()) return -1;
  const auto it = answer.find("error");
  if (it == answer.end()) return -1;
  const auto& holder = it->is_object() ? *it : answer;
  const auto code = holder.find(it->is_object() ? "grpc_code" : "code");
  return code != holder.end() && code->is_number_integer() ? code->get<int>() : 2;  // 2: gRPC Unknown
}

std::string error_message(const json& answer) {
  const auto& e = answer.at("error");
  std::string text;
  if (e.is_object()) {
    text = e.value("message", "");
  } else {
    text = answer.value("message", e.is_string() ? e.get<std::string>() : std::string());
  }
  if (text.empty()) text = "etcd error";
  return text + " (gRPC code " + std::to_string(error_code(answer)) + ")";
}

}  // namespace store::etcd::wire
