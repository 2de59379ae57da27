// fleet: the watch thread (read the prefix, converge, watch from the next revision) and the lease
// thread (this host's lease, its status keys).
#include "api/fleet.hpp"

#include "api/controller.hpp"
#include "store/forward_store.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <charconv>
#include <random>

namespace api {

namespace {

using namespace std::chrono_literals;
namespace etcd = store::etcd;

// The id in "<id>" or "<id>/...", or nothing.
std::optional<std::int64_t> leading_id(std::string_view s, std::string_view* rest = nullptr) {
  std::int64_t id = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
  if (ec != std::errc() || id <= 0) return std::nullopt;
  if (rest) *rest = s.substr(static_cast<std::size_t>(end - s.data()));
  return id;
}

// A field of a status or host document (written by other hosts, or by hand): `fallback` when it is
// missing or of another type, never an exception that would stop this host converging.
// A text is kept to its first max_status_text bytes: a key written by hand could hold a megabyte,
// repeated in every GET of its forward.
std::string text_field(const json& doc, const char* name, std::string fallback = {}) {
  const auto it = doc.find(name);
  if (it == doc.end() || !it->is_string()) return fallback;
  const auto& text = it->get_ref<const std::string&>();
  auto n = std::min(text.size(), max_status_text);
  while (n < text.size() && n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // whole UTF-8 characters
  return text.substr(0, n);
}

std::int64_t number_field(const json& doc, const char* name) {
  const auto it = doc.find(name);
  return it != doc.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

std::optional<write_guard> guard_of(const std::string& value, std::int64_t mod_revision) {
  std::int64_t next = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), next);
  if (ec != std::errc() || end != value.data() + value.size() || next < 1) return std::nullopt;
  return write_guard{next, mod_revision};
}

}  // namespace

fleet::fleet(options o)
    : options_(std::move(o)), root_(options_.prefix + "/"), etcd_(options_.etcd), watcher_(options_.etcd) {}

fleet::~fleet() { stop(); }

std::string fleet::forward_key(std::int64_t id) const { return root_ + "forwards/" + std::to_string(id); }
std::string fleet::guard_key() const { return root_ + "next_id"; }
std::string fleet::status_prefix(std::int64_t id) const { return root_ + "status/" + std::to_string(id) + "/"; }

void fleet::start(controller& ctl, std::int64_t local_revision) {
  ctl_ = &ctl;
  revision_ = local_revision;
  started_at_ = store::rfc3339_now();
  watch_thread_ = std::thread([this] { watch_loop(); });
  lease_thread_ = std::thread([this] { lease_loop(); });
}

void fleet::stop() {
  if (stopping_.exchange(true)) return;
  watcher_.stop_watch();
  wake_.notify_all();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (lease_thread_.joinable()) lease_thread_.join();
  if (lease_ != 0) {
    try {
      etcd_.lease_revoke(lease_);  // this host's status goes now rather than in lease_ttl_s
    } catch (const etcd::error& e) {
      spdlog::debug("etcd: could not revoke the lease: {}", e.what());
    }
  }
}

bool fleet::wait_synced(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  return wake_.wait_for(lock, limit, [this] { return synced_.load() || stopping(); }) && synced_.load();
}

etcd::txn_result fleet::commit(const std::vector<etcd::compare>& compares, const std::vector<etcd::operation>& ops) {
  try {
    auto r = etcd_.txn(compares, ops);
    set_reachable(true, {});
    return r;
  } catch (const etcd::error& e) {
    if (e.unreachable()) set_reachable(false, e.what());
    throw;
  }
}

fleet_changes fleet::read_all() {
  etcd::range_result all;
  try {
    all = etcd_.range(root_, etcd::prefix_end(root_));
  } catch (const etcd::error& e) {
    if (e.unreachable()) set_reachable(false, e.what());
    throw;
  }
  set_reachable(true, {});
  fleet_changes out;
  out.whole_set = true;
  out.revision = all.revision;
  {
    std::lock_guard lock(mutex_);
    statuses_.clear();
    hosts_.clear();
  }
  for (const auto& kv : all.kvs) {
    const std::string_view key = std::string_view(kv.key).substr(root_.size());
    if (key.starts_with("forwards/")) {
      if (auto id = leading_id(key.substr(9)); id && std::to_string(*id) == key.substr(9)) {
        out.forwards.push_back({*id, kv.value, kv.mod_revision, false});
      }
    } else if (key == "next_id") {
      out.guard = guard_of(kv.value, kv.mod_revision);
      if (!out.guard) {
        // Written by hand: compared as it is, and rewritten by the next change, with an id past every
        // id seen (controller::next_fleet_id).
        spdlog::warn("etcd: {} holds no id; the next change made through the API rewrites it", guard_key());
        out.guard = write_guard{1, kv.mod_revision};
      }
    } else {
      absorb_status(std::string(key), kv.value, false);
    }
  }
  if (!out.guard) out.guard = write_guard{};  // no key yet: a fresh fleet
  return out;
}

void fleet::absorb_status(const std::string& key, const std::string& value, bool deleted) {
  std::lock_guard lock(mutex_);
  if (key.starts_with("hosts/")) {
    const auto host = key.substr(6);
    if (deleted) {
      hosts_.erase(host);
      if (host == options_.host && !stopping()) {
        republish_ = true;
        wake_.notify_all();
      }
    } else {
      auto doc = json::parse(value, nullptr, false);
      hosts_[host] = doc.is_object() ? doc : json::object();
    }
    return;
  }
  if (!key.starts_with("status/")) return;
  std::string_view rest;
  const auto id = leading_id(std::string_view(key).substr(7), &rest);
  if (!id || !rest.starts_with("/") || rest.size() < 2) return;
  const std::string host(rest.substr(1));
  if (deleted) {
    if (auto it = statuses_.find(*id); it != statuses_.end()) {
      it->second.erase(host);
      if (it->second.empty()) statuses_.erase(it);
    }
    // This host's status of a forward it still serves, deleted by hand: written again. (A deleted
    // forward is forgotten here before its statuses' deletions are absorbed, so those are not.)
    if (host == options_.host && own_.contains(*id) && !stopping()) {
      dirty_[*id] = true;
      wake_.notify_all();
    }
    return;
  }
  const auto doc = json::parse(value, nullptr, false);
  if (!doc.is_object()) return;
  host_status s{host, text_field(doc, "state", "error"), text_field(doc, "error"),
                number_field(doc, "applied_revision")};
  statuses_[*id][host] = std::move(s);
}

void fleet::set_reachable(bool reachable, const std::string& why) {
  std::lock_guard lock(mutex_);
  reachable_ = reachable;
  if (logged_ == reachable) return;
  logged_ = reachable;
  if (reachable) {
    spdlog::info("etcd reachable at {}: serving the fleet's shared set", etcd_.current_endpoint());
  } else {
    spdlog::warn("etcd unreachable ({}): serving the local copy at revision {}; writes are refused until it answers",
                 why, revision_.load());
  }
}

bool fleet::back_off(std::size_t& failures) {
  // 100 ms doubling to 5 s, each step jittered to 50-150 %: hosts that lost etcd together do not
  // come back to it together.
  thread_local std::mt19937 random{std::random_device{}()};
  const auto base = std::min<std::int64_t>(5000, std::int64_t{100} << std::min<std::size_t>(failures, 6));
  ++failures;
  std::uniform_int_distribution<std::int64_t> jitter(base / 2, base * 3 / 2);
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, std::chrono::milliseconds(jitter(random)), [this] { return stopping(); });
  return !stopping();
}

void fleet::watch_loop() {
  std::size_t failures = 0;
  bool read = true;
  while (!stopping()) {
    try {
      if (read) {
        revision_ = ctl_->resync();
        read = false;
        failures = 0;
        {
          std::lock_guard lock(mutex_);
          synced_ = true;
        }
        wake_.notify_all();
      }
      watcher_.watch(root_, etcd::prefix_end(root_), revision_ + 1,
                     [this](const std::vector<etcd::watch_event>& events, std::int64_t revision) {
                       fleet_changes batch;
                       batch.revision = revision;
                       // Statuses and hosts after the forwards: a forward deleted in this batch is
                       // forgotten first, so its own status's deletion is not taken for one by hand.
                       std::vector<const etcd::watch_event*> statuses;
                       for (const auto& e : events) {
                         const std::string key = e.kv.key.substr(root_.size());
                         const bool deleted = e.type == etcd::watch_event::kind::delete_;
                         if (key.starts_with("forwards/")) {
                           auto id = leading_id(std::string_view(key).substr(9));
                           if (!id || std::to_string(*id) != key.substr(9)) continue;
                           batch.forwards.push_back({*id, deleted ? std::string() : e.kv.value, e.kv.mod_revision, deleted});
                         } else if (key == "next_id") {
                           batch.guard = deleted ? write_guard{} : guard_of(e.kv.value, e.kv.mod_revision);
                         } else {
                           statuses.push_back(&e);
                         }
                       }
                       if (!batch.forwards.empty() || batch.guard) ctl_->converge(batch);
                       for (const auto* e : statuses) {
                         absorb_status(e->kv.key.substr(root_.size()), e->kv.value,
                                       e->type == etcd::watch_event::kind::delete_);
                       }
                       revision_ = std::max(revision_.load(), revision);
                       set_reachable(true, {});
                     });
    } catch (const etcd::compacted& e) {
      spdlog::info("etcd: {}; reading the whole set again", e.what());
      read = true;
    } catch (const etcd::error& e) {
      if (e.unreachable()) set_reachable(false, e.what());
      else spdlog::warn("etcd refused a read or watch: {}", e.what());
      read = true;
      if (!back_off(failures)) break;
    } catch (const std::exception& e) {
      spdlog::error("fleet: {}", e.what());
      read = true;
      if (!back_off(failures)) break;
    }
  }
}

void fleet::lease_loop() {
  std::size_t failures = 0;
  const auto renew_every = std::chrono::milliseconds(options_.lease_ttl_s * 1000 / 3);
  auto renewed = std::chrono::steady_clock::now();
  while (!stopping()) {
    bool republish = false;
    try {
      {
        std::lock_guard lock(mutex_);
        republish = std::exchange(republish_, false);  // a deletion seen from now on asks again
      }
      if (lease_ == 0 || republish) {
        // Keys deleted by hand leave their lease alive: it is kept, and a new one taken only when
        // it expired too.
        if (republish) spdlog::warn("etcd: this host's key was deleted; publishing its status again");
        auto id = lease_;
        if (id == 0 || etcd_.lease_keepalive(id) == 0) id = etcd_.lease_grant(options_.lease_ttl_s);
        etcd_.put(root_ + "hosts/" + options_.host,
                  json{{"started_at", started_at_}, {"version", PORTRELAY_VERSION}}.dump(), id);
        {
          std::lock_guard lock(mutex_);
          lease_ = id;
          for (const auto& [fid, s] : own_) dirty_[fid] = true;  // a new lease: every status again
        }
        renewed = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - renewed >= renew_every) {
        if (etcd_.lease_keepalive(lease_) == 0) {
          spdlog::warn("etcd: this host's lease expired; publishing its status again");
          std::lock_guard lock(mutex_);
          lease_ = 0;
          continue;
        }
        renewed = std::chrono::steady_clock::now();
      }
      std::map<std::int64_t, bool> todo;
      std::map<std::int64_t, host_status> own;
      {
        std::lock_guard lock(mutex_);
        todo.swap(dirty_);
        own = own_;
      }
      for (auto it = todo.begin(); it != todo.end();) {
        const auto key = status_prefix(it->first) + options_.host;
        try {
          if (auto s = own.find(it->first); it->second && s != own.end()) {
            etcd_.put(key,
                      json{{"state", s->second.state},
                           {"error", s->second.error.empty() ? json(nullptr) : json(s->second.error)},
                           {"applied_revision", s->second.applied_revision}}
                          .dump(-1, ' ', false, json::error_handler_t::replace),
                      lease_);
          } else {
            etcd_.delete_range(key);
          }
          it = todo.erase(it);
        } catch (...) {
          std::lock_guard lock(mutex_);
          for (const auto& [fid, write] : todo) dirty_.try_emplace(fid, write);  // newer reports win
          throw;
        }
      }
      failures = 0;
      set_reachable(true, {});
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, renew_every - (std::chrono::steady_clock::now() - renewed),
                     [this] { return stopping() || !dirty_.empty() || republish_; });
    } catch (const etcd::error& e) {
      if (republish) {
        std::lock_guard lock(mutex_);
        republish_ = true;  // not done: again after the back-off
      }
      if (e.unreachable()) set_reachable(false, e.what());
      else spdlog::warn("etcd refused this host's lease or status: {}", e.what());
      if (!back_off(failures)) break;
    }
  }
}

void fleet::report(std::int64_t id, const relay::forward_status& status, std::int64_t applied_revision) {
  {
    std::lock_guard lock(mutex_);
    host_status s{options_.host, std::string(relay::to_string(status.state)), status.error, applied_revision};
    auto& mine = own_[id];
    if (mine.state == s.state && mine.error == s.error && mine.applied_revision == s.applied_revision &&
        !mine.host.empty()) {
      return;
    }
    mine = std::move(s);
    dirty_[id] = true;
  }
  wake_.notify_all();
}

void fleet::forget(std::int64_t id) {
  {
    std::lock_guard lock(mutex_);
    if (own_.erase(id) == 0) return;
    dirty_[id] = false;
    statuses_.erase(id);
  }
  wake_.notify_all();
}

std::vector<host_status> fleet::hosts_of(std::int64_t id) const {
  std::lock_guard lock(mutex_);
  std::map<std::string, host_status> all;
  if (auto it = statuses_.find(id); it != statuses_.end()) all = it->second;
  if (auto it = own_.find(id); it != own_.end()) all[options_.host] = it->second;
  std::vector<host_status> out;
  for (auto& [host, s] : all) out.push_back(std::move(s));
  return out;
}

json fleet::describe() const {
  std::lock_guard lock(mutex_);
  json hosts = json::array();
  for (const auto& [name, doc] : hosts_) {
    hosts.push_back(
        json{{"host", name}, {"started_at", text_field(doc, "started_at")}, {"version", text_field(doc, "version")}});
  }
  return json{{"store", "etcd"},
              {"host", options_.host},
              {"prefix", options_.prefix},
              {"reachable", reachable_.load()},
              {"endpoint", etcd_.current_endpoint()},
              {"revision", revision_.load()},
              {"hosts", std::move(hosts)}};
}

}  // namespace api
