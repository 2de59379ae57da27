// forward_fields: the table of a forward's writable fields, and the stored document built from it.
#include "relay/forward_fields.hpp"

#include <asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <tuple>
#include <type_traits>

namespace relay {

namespace {

using problem = std::optional<std::string>;

// An integer from `min` to `max` into `out`, or why not, as a sentence naming `what`. Values too
// large for int64 parse as unsigned; they are compared in the type they were parsed as, so none wraps.
problem read_integer(const json& v, const std::string& what, std::int64_t min, std::int64_t max, std::int64_t& out) {
  const std::string range = " from " + std::to_string(min) + " to " + std::to_string(max);
  if (!v.is_number_integer()) return what + " must be an integer" + range;
  const bool in_range = v.is_number_unsigned() ? v.get<std::uint64_t>() >= static_cast<std::uint64_t>(min) &&
                                                     v.get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
                                               : v.get<std::int64_t>() >= min && v.get<std::int64_t>() <= max;
  if (!in_range) return what + " must be" + range;
  out = v.get<std::int64_t>();
  return std::nullopt;
}

// An integer member of forward_spec, from `min` to `max`.
template <class T>
forward_field integer(std::string name, T forward_spec::*member, std::int64_t min, std::int64_t max) {
  forward_field f;
  f.read = [name, member, min, max](const json& v, forward_spec& spec) -> problem {
    std::int64_t n = 0;
    if (auto bad = read_integer(v, name, min, max, n)) return bad;
    spec.*member = static_cast<T>(n);
    return std::nullopt;
  };
  f.write = [member](const forward_spec& spec) { return json(spec.*member); };
  f.refused = {json(min - 1), json(max + 1), json(std::to_string(min)), json(1.5), json(nullptr)};
  f.name = std::move(name);
  return f;
}

// Why an object's key is not one of `known`, naming the object as `what`.
problem unknown_key(const json& object, const std::string& what, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return what + " has an unknown key '" + printable(key) + "'";
    }
  }
  return std::nullopt;
}

// The shorthand target_host/target_port edits the one target of a forward that has one (or makes it).
problem one_target(forward_spec& spec, std::string_view field) {
  if (spec.targets.empty()) spec.targets.emplace_back();
  if (spec.targets.size() == 1) return std::nullopt;
  return std::string(field) + " is a shorthand for a forward with one target; this one has " +
         std::to_string(spec.targets.size()) + ": PATCH targets instead";
}

// Whether two target hosts name the same thing: IP literals in any spelling ("::1" and "0::0001";
// "::ffff:127.0.0.1" and "127.0.0.1", as the loop guard reads them), host names in any case and with
// or without the root's trailing dot ("Example.com." and "example.com"). A zone stays as typed:
// interface names have case, and an index and a name for one interface are not compared.
bool same_target_host(std::string_view a, std::string_view b) {
  const auto key = [](std::string_view h) {
    std::error_code ec;
    const auto address = asio::ip::make_address(std::string(h), ec);
    if (!ec && address.is_v6() && address.to_v6().is_v4_mapped()) {
      return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
    }
    if (!ec || h.find(':') != std::string_view::npos) return canonical_address(h);
    std::string lower(h);
    if (!lower.empty() && lower.back() == '.') lower.pop_back();
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    return lower;
  };
  return key(a) == key(b);
}

// `targets`: 1 to max_targets objects {host, port, weight, backup}; no host:port twice; at least one
// not a backup.
problem read_targets(const json& v, std::vector<target_spec>& out) {
  const std::string size = "targets must be an array of 1 to " + std::to_string(max_targets) + " objects";
  if (!v.is_array() || v.empty() || v.size() > max_targets) return size;
  std::vector<target_spec> pool;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& e = v[i];
    const std::string what = "targets[" + std::to_string(i) + "]";
    if (!e.is_object()) return size;
    if (auto bad = unknown_key(e, what, {"host", "port", "weight", "backup"})) return bad;
    target_spec t;
    if (!e.contains("host") || !e["host"].is_string()) return what + ".host must be a string";
    t.host = e["host"].get<std::string>();
    if (auto bad = check_target_host(t.host)) return what + "." + bad->substr(std::string_view("target_").size());
    if (!e.contains("port")) return what + ".port is required";
    std::int64_t n = 0;
    if (auto bad = read_integer(e["port"], what + ".port", 1, 65535, n)) return bad;
    t.port = static_cast<std::uint16_t>(n);
    if (e.contains("weight")) {
      if (auto bad = read_integer(e["weight"], what + ".weight", 1, 1000, n)) return bad;
      t.weight = static_cast<std::uint32_t>(n);
    }
    if (e.contains("backup")) {
      if (!e["backup"].is_boolean()) return what + ".backup must be true or false";
      t.backup = e["backup"].get<bool>();
    }
    for (std::size_t j = 0; j < pool.size(); ++j) {
      if (pool[j].port == t.port && same_target_host(pool[j].host, t.host)) {
        return what + " repeats targets[" + std::to_string(j) + "] (" + target_endpoint(pool[j]) +
               "): each host and port may appear once";
      }
    }
    pool.push_back(std::move(t));
  }
  if (std::all_of(pool.begin(), pool.end(), [](const target_spec& t) { return t.backup; })) {
    return "targets must have at least one target that is not a backup";
  }
  out = std::move(pool);
  return std::nullopt;
}

// `health_check`: an object of interval_s, timeout_s, rise, fall and port, each optional.
problem read_health_check(const json& v, health_check_spec& out) {
  if (!v.is_object()) return "health_check must be null or an object of interval_s, timeout_s, rise, fall and port";
  if (auto bad = unknown_key(v, "health_check", {"interval_s", "timeout_s", "rise", "fall", "port"})) return bad;
  health_check_spec h;
  std::int64_t n = 0;
  const std::tuple<const char*, std::uint32_t*, std::int64_t, std::int64_t> numbers[] = {
      {"interval_s", &h.interval_s, 1, 3600},
      {"timeout_s", &h.timeout_s, 1, 60},
      {"rise", &h.rise, 1, 100},
      {"fall", &h.fall, 1, 100},
  };
  for (const auto& [key, member, min, max] : numbers) {
    if (!v.contains(key)) continue;
    if (auto bad = read_integer(v[key], std::string("health_check.") + key, min, max, n)) return bad;
    *member = static_cast<std::uint32_t>(n);
  }
  if (v.contains("port") && !v["port"].is_null()) {
    if (auto bad = read_integer(v["port"], "health_check.port", 1, 65535, n)) return bad;
    h.port = static_cast<std::uint16_t>(n);
  }
  // Without a timeout_s of its own, a check shorter than the default timeout times out at its interval.
  if (!v.contains("timeout_s")) h.timeout_s = std::min(h.timeout_s, h.interval_s);
  if (h.timeout_s > h.interval_s) return "health_check.timeout_s must be at most health_check.interval_s";
  out = h;
  return std::nullopt;
}

// `allow` or `deny`: at most max_prefixes IP addresses or CIDR prefixes, each read into its canonical
// form, none twice.
problem read_prefixes(const json& v, const std::string& name, std::vector<ip_prefix>& out) {
  if (!v.is_array() || v.size() > max_prefixes) {
    return name + " must be an array of at most " + std::to_string(max_prefixes) + " IP addresses or CIDR prefixes";
  }
  std::vector<ip_prefix> list;
  list.reserve(v.size());
  std::map<std::string, std::size_t> seen;  // canonical text -> index
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string what = name + "[" + std::to_string(i) + "]";
    if (!v[i].is_string()) return what + " must be a string such as \"192.0.2.0/24\"";
    auto parsed = parse_prefix(v[i].get<std::string>());
    if (auto* why = std::get_if<std::string>(&parsed)) return what + " " + *why;
    const auto& p = std::get<ip_prefix>(parsed);
    const auto [at, added] = seen.emplace(to_string(p), i);
    if (!added) return what + " repeats " + name + "[" + std::to_string(at->second) + "] (" + at->first + ")";
    list.push_back(p);
  }
  out = std::move(list);
  return std::nullopt;
}

forward_field prefixes(std::string name, std::vector<ip_prefix> forward_spec::*member) {
  forward_field f;
  f.effect = change_effect::reconfigure;
  f.read = [name, member](const json& v, forward_spec& spec) { return read_prefixes(v, name, spec.*member); };
  f.write = [member](const forward_spec& spec) {
    json out = json::array();
    for (const auto& p : spec.*member) out.push_back(to_string(p));
    return out;
  };
  f.refused = {nullptr, "10.0.0.0/8", json::object(), json::array({7}), json::array({"10.1.2.3/8"}),
               json::array({"10.0.0.0/33"}), json::array({"::/129"}), json::array({"nonsense"}),
               json::array({"10.0.0.0/8", "10.0.0.0/08"}), json::array({"fe80::1%lo/128"}),
               json(std::vector<std::string>(max_prefixes + 1, "10.0.0.0/8"))};
  f.name = std::move(name);
  return f;
}

// `source_address`: null, or one unicast IP address as inet_pton reads it (no host name, no leading
// zeros in IPv4 octets), in its canonical form. Whether this host has it needs I/O: the controller
// asks the kernel (api/controller).
problem read_source_address(const json& v, std::optional<asio::ip::address>& out) {
  const std::string such = "source_address must be null or an IP address of this host such as 192.0.2.7";
  if (v.is_null()) {
    out.reset();
    return std::nullopt;
  }
  if (!v.is_string()) return such;
  const auto text = v.get<std::string>();
  const std::string quoted = "source_address '" + printable(text.substr(0, 64)) + (text.size() > 64 ? "...'" : "'");
  if (text.find('%') != std::string::npos) return quoted + " has a zone: link-local source addresses are not supported";
  auto parsed = parse_prefix(text);
  if (std::holds_alternative<std::string>(parsed) || text.find('/') != std::string::npos) return such;
  const auto address = std::get<ip_prefix>(parsed).address;  // IPv4-mapped comes back as IPv4
  const auto shown = "source_address " + address.to_string();
  if (address.is_unspecified()) return shown + " is a wildcard: give one address of this host, or null to let the kernel choose";
  if (address.is_multicast()) return shown + " is a multicast address: connections leave from a unicast address";
  if (address.is_v4() && address.to_v4() == asio::ip::address_v4::broadcast()) {
    return shown + " is the broadcast address: connections leave from a unicast address";
  }
  if (address.is_v6() && address.to_v6().is_link_local()) return shown + ": link-local source addresses are not supported";
  out = address;
  return std::nullopt;
}

// `bandwidth_limit`: an object of up_bytes_per_s, down_bytes_per_s and burst_bytes, each optional
// and each null for "not given".
problem read_bandwidth_limit(const json& v, bandwidth_limit_spec& out) {
  if (!v.is_object()) return "bandwidth_limit must be null or an object of up_bytes_per_s, down_bytes_per_s and burst_bytes";
  if (auto bad = unknown_key(v, "bandwidth_limit", {"up_bytes_per_s", "down_bytes_per_s", "burst_bytes"})) return bad;
  bandwidth_limit_spec limit;
  const auto max = static_cast<std::int64_t>(max_rate_bytes_per_s);
  for (auto [key, member, min] :
       {std::tuple{"up_bytes_per_s", &bandwidth_limit_spec::up_bytes_per_s, min_rate_bytes_per_s},
        std::tuple{"down_bytes_per_s", &bandwidth_limit_spec::down_bytes_per_s, min_rate_bytes_per_s},
        std::tuple{"burst_bytes", &bandwidth_limit_spec::burst_bytes, min_burst_bytes}}) {
    if (!v.contains(key) || v[key].is_null()) continue;
    std::int64_t n = 0;
    if (auto bad = read_integer(v[key], std::string("bandwidth_limit.") + key, static_cast<std::int64_t>(min), max, n)) {
      return bad;
    }
    limit.*member = static_cast<std::uint64_t>(n);
  }
  out = limit;
  return std::nullopt;
}

// A boolean member of forward_spec.
forward_field boolean(std::string name, bool forward_spec::*member, change_effect effect) {
  forward_field f;
  f.effect = effect;
  f.read = [name, member](const json& v, forward_spec& spec) -> problem {
    if (!v.is_boolean()) return name + " must be true or false";
    spec.*member = v.get<bool>();
    return std::nullopt;
  };
  f.write = [member](const forward_spec& spec) { return json(spec.*member); };
  f.refused = {json(1), json("true"), json(nullptr)};
  f.name = std::move(name);
  return f;
}

// A string member of forward_spec, checked by `check` (then turned into its canonical form, if any).
forward_field text(std::string name, std::string forward_spec::*member, problem (*check)(std::string_view),
                   std::string (*canonical)(std::string_view) = nullptr) {
  forward_field f;
  f.read = [name, member, check, canonical](const json& v, forward_spec& spec) -> problem {
    if (!v.is_string()) return name + " must be a string";
    spec.*member = v.get<std::string>();  // kept even when refused: a stored one is shown as it is
    if (auto bad = check(spec.*member)) return bad;
    if (canonical) spec.*member = canonical(spec.*member);
    return std::nullopt;
  };
  f.write = [member](const forward_spec& spec) { return json(spec.*member); };
  f.refused = {json(7), json(true), json(nullptr)};
  f.name = std::move(name);
  return f;
}

// An optional object member of forward_spec (reconfigure): null for nothing, else read by `read_object`.
template <class T>
forward_field optional_object(std::string name, std::optional<T> forward_spec::*member,
                              problem (*read_object)(const json&, T&),
                              std::type_identity_t<json (*)(const T&)> write_object) {
  forward_field f;
  f.effect = change_effect::reconfigure;
  f.read = [member, read_object](const json& v, forward_spec& spec) -> problem {
    if (v.is_null()) {
      (spec.*member).reset();
      return std::nullopt;
    }
    T value;
    if (auto bad = read_object(v, value)) return bad;
    spec.*member = value;
    return std::nullopt;
  };
  f.write = [member, write_object](const forward_spec& spec) {
    return spec.*member ? write_object(*(spec.*member)) : json(nullptr);
  };
  f.name = std::move(name);
  return f;
}

std::vector<forward_field> declare() {
  std::vector<forward_field> fields;

  auto name = text("name", &forward_spec::name, check_name);
  name.examples = {"web", "dns \xE2\x98\x83"};
  name.refused.push_back(std::string(65, 'n'));
  name.refused.push_back("tab\there");
  fields.push_back(std::move(name));

  forward_field proto;
  proto.name = "protocol";
  proto.required = true;
  proto.effect = change_effect::rebind;
  proto.read = [](const json& v, forward_spec& spec) -> problem {
    if (!v.is_string()) return "protocol must be a string";
    auto p = parse_protocol(v.get<std::string>());
    if (!p) return "protocol must be \"tcp\" or \"udp\"";
    spec.protocol = *p;
    return std::nullopt;
  };
  proto.write = [](const forward_spec& spec) { return json(to_string(spec.protocol)); };
  proto.examples = {"udp"};
  proto.refused = {"sctp", "TCP", 6, nullptr};
  fields.push_back(std::move(proto));

  auto listen_host = text("listen_host", &forward_spec::listen_host, check_listen_host, canonical_address);
  listen_host.effect = change_effect::rebind;
  listen_host.examples = {"127.0.0.1", "::1"};
  listen_host.refused.push_back("localhost");
  listen_host.refused.push_back("");
  fields.push_back(std::move(listen_host));

  auto listen_port = integer("listen_port", &forward_spec::listen_port, 0, 65535);
  listen_port.required = true;
  listen_port.effect = change_effect::rebind;
  // No fixed examples: a port that is free here may be taken there (the test draws free ones).
  fields.push_back(std::move(listen_port));

  // Its bounds depend on listen_port, which may come later in a body: check_across holds them.
  forward_field listen_port_end;
  listen_port_end.name = "listen_port_end";
  listen_port_end.effect = change_effect::rebind;
  listen_port_end.read = [](const json& v, forward_spec& spec) -> problem {
    if (v.is_null()) {
      spec.listen_port_end.reset();
      return std::nullopt;
    }
    std::int64_t n = 0;
    if (read_integer(v, "listen_port_end", 1, 65535, n)) {
      return "listen_port_end must be null or an integer from listen_port + 1 to listen_port + " +
             std::to_string(max_range_ports - 1);
    }
    spec.listen_port_end = static_cast<std::uint16_t>(n);
    return std::nullopt;
  };
  listen_port_end.write = [](const forward_spec& spec) {
    return spec.listen_port_end ? json(*spec.listen_port_end) : json(nullptr);
  };
  // No fixed examples: they follow listen_port (the test draws a free range).
  listen_port_end.refused = {0, 65536, -1, "40001", 1.5, true, json::array()};
  fields.push_back(std::move(listen_port_end));

  // The one-target shorthand: a view of `targets` (see forward_field::shorthand).
  forward_field target_host;
  target_host.name = "target_host";
  target_host.shorthand = true;
  target_host.effect = change_effect::reconfigure;
  target_host.read = [](const json& v, forward_spec& spec) -> problem {
    if (!v.is_string()) return "target_host must be a string";
    if (auto bad = one_target(spec, "target_host")) return bad;
    spec.targets.front().host = v.get<std::string>();  // kept even when refused: a stored one is shown as it is
    return check_target_host(spec.targets.front().host);
  };
  target_host.write = [](const forward_spec& spec) {
    return spec.targets.size() == 1 ? json(spec.targets.front().host) : json(nullptr);
  };
  target_host.examples = {"127.0.0.1", "localhost"};
  target_host.refused = {"", "no spaces.example", 7, true};
  fields.push_back(std::move(target_host));

  forward_field target_port;
  target_port.name = "target_port";
  target_port.shorthand = true;
  target_port.effect = change_effect::reconfigure;
  target_port.read = [](const json& v, forward_spec& spec) -> problem {
    std::int64_t port = 0;
    if (auto bad = read_integer(v, "target_port", 1, 65535, port)) return bad;
    if (auto bad = one_target(spec, "target_port")) return bad;
    spec.targets.front().port = static_cast<std::uint16_t>(port);
    return std::nullopt;
  };
  target_port.write = [](const forward_spec& spec) {
    return spec.targets.size() == 1 ? json(spec.targets.front().port) : json(nullptr);
  };
  target_port.examples = {9, 10};  // the field walk draws live targets' ports instead, to see them reached
  target_port.refused = {0, 65536, "80", 1.5};
  fields.push_back(std::move(target_port));

  forward_field targets;
  targets.name = "targets";
  targets.effect = change_effect::reconfigure;
  targets.read = [](const json& v, forward_spec& spec) -> problem {
    return read_targets(v, spec.targets);
  };
  targets.write = [](const forward_spec& spec) {
    json out = json::array();
    for (const auto& t : spec.targets) {
      out.push_back(json{{"host", t.host}, {"port", t.port}, {"weight", t.weight}, {"backup", t.backup}});
    }
    return out;
  };
  targets.examples = {json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"weight", 3}, {"backup", false}},
                                   json{{"host", "localhost"}, {"port", 9}, {"weight", 1}, {"backup", true}}})};
  targets.refused = {json::array(), json::object(), "127.0.0.1:9", nullptr,
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"backup", true}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}}, json{{"host", "127.0.0.1"}, {"port", 9}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 0}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"weight", 1001}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"weight", 0}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"backup", "no"}}}),
                     json::array({json{{"host", ""}, {"port", 9}}}),
                     json::array({json{{"port", 9}}}),
                     json::array({json{{"host", "127.0.0.1"}, {"port", 9}, {"wieght", 2}}}),
                     json::array({7})};
  fields.push_back(std::move(targets));

  forward_field balance;
  balance.name = "balance";
  balance.effect = change_effect::reconfigure;
  balance.read = [](const json& v, forward_spec& spec) -> problem {
    const auto policy = v.is_string() ? parse_balance(v.get<std::string>()) : std::nullopt;
    if (!policy) return "balance must be \"round_robin\", \"least_conn\", \"source_hash\" or \"first\"";
    spec.balance = *policy;
    return std::nullopt;
  };
  balance.write = [](const forward_spec& spec) { return json(to_string(spec.balance)); };
  balance.examples = {"least_conn", "source_hash", "first"};
  balance.refused = {"random", "ROUND_ROBIN", 1, nullptr};
  fields.push_back(std::move(balance));

  forward_field source;
  source.name = "source_address";
  source.effect = change_effect::reconfigure;
  source.read = [](const json& v, forward_spec& spec) { return read_source_address(v, spec.source_address); };
  source.write = [](const forward_spec& spec) {
    return spec.source_address ? json(spec.source_address->to_string()) : json(nullptr);
  };
  // Addresses every loopback has, of the walk's targets' family (127.0.0.1).
  source.examples = {"127.0.0.2", "127.0.0.3"};
  source.refused = {7,           true,          "localhost",  "127.0.0.1/32", "127.000.0.1", "",
                    "0.0.0.0",   "::",          "224.0.0.1",  "ff02::1",      "255.255.255.255",
                    "fe80::1",   "fe80::1%lo",  "::1%lo",     json::array({"127.0.0.1"})};
  fields.push_back(std::move(source));

  auto health = optional_object("health_check", &forward_spec::health_check, read_health_check,
                                [](const health_check_spec& h) {
                                  return json{{"interval_s", h.interval_s}, {"timeout_s", h.timeout_s},
                                              {"rise", h.rise}, {"fall", h.fall},
                                              {"port", h.port ? json(*h.port) : json(nullptr)}};
                                });
  health.examples = {json{{"interval_s", 1}, {"timeout_s", 1}, {"rise", 1}, {"fall", 1}, {"port", 9}},
                     json{{"interval_s", 5}, {"timeout_s", 2}, {"rise", 2}, {"fall", 3}, {"port", 10}}};
  health.refused = {true, "5s", json::array(), json{{"interval_s", 0}}, json{{"interval_s", 3601}},
                    json{{"interval_s", 2}, {"timeout_s", 3}}, json{{"timeout_s", 61}}, json{{"rise", 0}},
                    json{{"fall", 101}}, json{{"port", 0}}, json{{"port", 65536}}, json{{"intervall_s", 5}},
                    json{{"rise", "2"}}};
  fields.push_back(std::move(health));

  auto allow = prefixes("allow", &forward_spec::allow);
  allow.examples = {json::array({"127.0.0.0/8", "::1/128"}), json::array({"192.0.2.0/24"})};
  fields.push_back(std::move(allow));

  auto deny = prefixes("deny", &forward_spec::deny);
  deny.examples = {json::array({"192.0.2.7/32", "2001:db8::/32"}), json::array({"127.0.0.0/8", "::1/128"})};
  fields.push_back(std::move(deny));

  auto max_connections = integer("max_connections", &forward_spec::max_connections, 0, 1000000);
  max_connections.effect = change_effect::reconfigure;
  max_connections.examples = {1, 2};
  fields.push_back(std::move(max_connections));

  auto per_source = integer("max_connections_per_source", &forward_spec::max_connections_per_source, 0, 1000000);
  per_source.effect = change_effect::reconfigure;
  per_source.examples = {1, 2};
  fields.push_back(std::move(per_source));

  auto bandwidth = optional_object("bandwidth_limit", &forward_spec::bandwidth_limit, read_bandwidth_limit,
                                   [](const bandwidth_limit_spec& b) {
                                     const auto value = [](const std::optional<std::uint64_t>& n) {
                                       return n ? json(*n) : json(nullptr);
                                     };
                                     return json{{"up_bytes_per_s", value(b.up_bytes_per_s)},
                                                 {"down_bytes_per_s", value(b.down_bytes_per_s)},
                                                 {"burst_bytes", value(b.burst_bytes)}};
                                   });
  // A limit with no rate limits nothing: it is stored and shown as null, so GET says so.
  bandwidth.read = [read = bandwidth.read](const json& v, forward_spec& spec) {
    auto bad = read(v, spec);
    const auto& b = spec.bandwidth_limit;
    if (!bad && b && !b->up_bytes_per_s && !b->down_bytes_per_s) spec.bandwidth_limit.reset();
    return bad;
  };
  // Slow enough for the walk to see each direction's limit at work (the default burst is 64 KiB).
  bandwidth.examples = {json{{"up_bytes_per_s", 65536}, {"down_bytes_per_s", nullptr}, {"burst_bytes", 65536}},
                        json{{"up_bytes_per_s", nullptr}, {"down_bytes_per_s", 65536}, {"burst_bytes", nullptr}}};
  bandwidth.refused = {true, "1M", json::array(), json{{"up_bytes_per_s", 1023}},
                       json{{"down_bytes_per_s", 100000000001LL}}, json{{"burst_bytes", 65535}},
                       json{{"up_bytes_per_s", 1.5}}, json{{"up_bytes_per_s", "1024"}}, json{{"up_bytes_per_sec", 2048}},
                       json{{"up_bytes_per_s", -1}}};
  fields.push_back(std::move(bandwidth));

  forward_field proxy;
  proxy.name = "proxy_protocol";
  proxy.effect = change_effect::reconfigure;
  proxy.read = [](const json& v, forward_spec& spec) -> problem {
    if (v.is_null()) {
      spec.proxy_protocol = 0;
    } else if (v == "v1" || v == "v2") {
      spec.proxy_protocol = v == "v1" ? 1 : 2;
    } else {
      return "proxy_protocol must be null, \"v1\" or \"v2\"";
    }
    return std::nullopt;
  };
  proxy.write = [](const forward_spec& spec) {
    return spec.proxy_protocol == 0 ? json(nullptr) : json(spec.proxy_protocol == 1 ? "v1" : "v2");
  };
  proxy.examples = {"v1", "v2"};
  proxy.refused = {"v3", "V1", 1, true, json::object()};
  fields.push_back(std::move(proxy));

  auto accept_proxy = boolean("accept_proxy_protocol", &forward_spec::accept_proxy_protocol, change_effect::reconfigure);
  accept_proxy.udp = false;
  accept_proxy.examples = {true};
  fields.push_back(std::move(accept_proxy));

  auto enabled = boolean("enabled", &forward_spec::enabled, change_effect::enable);
  enabled.examples = {false};
  fields.push_back(std::move(enabled));

  auto idle = integer("udp_idle_timeout_s", &forward_spec::udp_idle_timeout_s, 1, 86400);
  idle.tcp = false;
  idle.effect = change_effect::reconfigure;
  idle.examples = {120, 1};  // long, then short: the walk sees the short one end a session
  fields.push_back(std::move(idle));

  auto sessions = integer("udp_max_sessions", &forward_spec::udp_max_sessions, 1, 1000000);
  sessions.tcp = false;
  sessions.effect = change_effect::reconfigure;
  sessions.examples = {10, 20};
  fields.push_back(std::move(sessions));

  return fields;
}

// listen_port_end against listen_port and the targets: listen_port + 1 to listen_port + 16,383, an
// explicit listen_port, and every target's port + the range's size - 1 a port. A health check's own
// port is not offset (it checks that one port), so it needs no room.
problem check_range(const forward_spec& spec) {
  if (!spec.listen_port_end) return std::nullopt;
  const auto end = *spec.listen_port_end;
  if (spec.listen_port == 0) {
    return std::string("listen_port_end needs an explicit listen_port: a range cannot start at a port the kernel "
                       "picks");
  }
  const std::uint32_t first = spec.listen_port + 1u, last = spec.listen_port + max_range_ports - 1;
  if (end < first || end > last) {
    return "listen_port_end must be from listen_port + 1 (" + std::to_string(first) + ") to listen_port + " +
           std::to_string(max_range_ports - 1) + " (" + std::to_string(std::min<std::uint32_t>(last, 65535)) + ")";
  }
  const auto size = range_size(spec);
  for (const auto& t : spec.targets) {
    if (t.port + size - 1 > 65535) {
      return "the range of " + std::to_string(size) + " ports would reach past port 65535 on target " +
             target_endpoint(t) + " (its ports " + std::to_string(t.port) + " to " + std::to_string(t.port + size - 1) +
             ")";
    }
  }
  return std::nullopt;
}

}  // namespace

const std::vector<forward_field>& forward_fields() {
  static const std::vector<forward_field> fields = declare();
  return fields;
}

const forward_field* find_field(std::string_view name) {
  const auto& fields = forward_fields();
  auto it = std::find_if(fields.begin(), fields.end(), [&](const forward_field& f) { return f.name == name; });
  return it == fields.end() ? nullptr : &*it;
}

json to_document(const forward_spec& spec) {
  json doc = json::object();
  for (const auto& f : forward_fields()) {
    if (!f.shorthand) doc[f.name] = f.write(spec);
  }
  return doc;
}

std::string document_text(const forward_spec& spec) {
  return to_document(spec).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<field_problem> from_document(const json& doc, forward_spec& spec) {
  if (!doc.is_object()) return field_problem{"spec", "spec is not a JSON object"};
  std::optional<field_problem> first;
  for (const auto& f : forward_fields()) {
    auto it = doc.find(f.name);
    if (it == doc.end()) continue;
    auto bad = f.read(*it, spec);
    if (bad && !first) first = field_problem{f.name, std::move(*bad)};
  }
  if (!first) first = check_across(spec);
  return first;
}

std::optional<field_problem> check_across(const forward_spec& spec) {
  if (spec.targets.empty()) return field_problem{"targets", "targets must be an array of 1 to 64 objects"};
  for (const auto& t : spec.targets) {
    if (t.port == 0) return field_problem{"target_port", "target_port must be from 1 to 65535"};
  }
  if (auto bad = check_range(spec)) return field_problem{"listen_port_end", std::move(*bad)};
  if (spec.protocol == protocol::udp && spec.health_check && !spec.health_check->port) {
    return field_problem{"health_check",
                         "health_check on a udp forward needs a port: the check is a TCP connect, and UDP has no "
                         "handshake to check"};
  }
  if (spec.protocol == protocol::udp && spec.proxy_protocol == 1) {
    return field_problem{"proxy_protocol",
                         "proxy_protocol on a udp forward must be \"v2\": version 1 has no form for datagrams"};
  }
  return std::nullopt;
}

bool changes(const forward_spec& a, const forward_spec& b, change_effect effect) {
  return std::any_of(forward_fields().begin(), forward_fields().end(),
                     [&](const forward_field& f) { return f.effect == effect && f.write(a) != f.write(b); });
}

}  // namespace relay
