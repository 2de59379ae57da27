// etcd_wire: etcd v3's JSON gateway encoding (rpc.proto through grpc-gateway): base64 bytes,
// int64s as strings, absent fields as zero; the requests etcd_client sends and the answers it reads.
#pragma once

#include "store/etcd_client.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace store::etcd::wire {

using json = nlohmann::json;

// An answer that is not what rpc.proto says (not base64, not a number): a bug or not etcd.
class bad_answer : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string base64(std::string_view bytes);
// Throws bad_answer when `text` is not base64.
std::string unbase64(std::string_view text);

// Field `name` of `object` as bytes (base64) or as an int64 (a string or a number); absent or null
// is empty or 0. Throws bad_answer when it is something else.
std::string bytes_field(const json& object, const char* name);
std::int64_t int_field(const json& object, const char* name);

key_value to_key_value(const json& kv);
// A RangeResponse: its kvs, at `fallback_revision` when it has no header revision of its own.
range_result to_range_result(const json& response, std::int64_t fallback_revision = 0);

json range_request(const std::string& key, const std::string& range_end, std::int64_t revision);
json put_request(const std::string& key, const std::string& value, std::int64_t lease);
json delete_request(const std::string& key, const std::string& range_end);
json txn_request(const std::vector<compare>& compares, const std::vector<operation>& success,
                 const std::vector<operation>& failure);
json watch_create_request(const std::string& key, const std::string& range_end, std::int64_t start_revision);

// An error answer, unary ({"error":"...","message":"...","code":N}) or streamed
// ({"error":{"grpc_code":N,"message":"..."}}): its gRPC code, or -1 when `answer` is no error.
int error_code(const json& answer);
// Its message with the gRPC code, "etcdserver: ... (gRPC code 3)".
std::string error_message(const json& answer);

// gRPC codes etcd answers with that the client acts on.
constexpr int code_out_of_range = 11;   // mvcc: revision compacted, or in the future
constexpr int code_not_found = 5;       // lease not found
constexpr int code_unavailable = 14;    // no leader, request timed out, leader changed, stopping
constexpr int code_unauthenticated = 16; // invalid or expired auth token

}  // namespace store::etcd::wire
