// admission: the compiled allow/deny filter, and a forward's live counts with their tickets.
#include "relay/admission.hpp"

#include <spdlog/spdlog.h>

#include <cstring>

namespace relay {

source_filter::source_filter(const forward_spec& spec) : allow_(spec.allow), deny_(spec.deny) {}

bool source_filter::admits(const asio::ip::address& client) const {
  return !deny_.contains(client) && (allow_.empty() || allow_.contains(client));
}

std::shared_ptr<const source_filter> make_filter(const forward_spec& spec) {
  if (spec.allow.empty() && spec.deny.empty()) return nullptr;
  return std::make_shared<const source_filter>(spec);
}

admission_ticket::admission_ticket(admission_ticket&& o) noexcept
    : owner_(o.owner_), source_(o.source_), epoch_(o.epoch_), has_source_(o.has_source_) {
  o.owner_ = nullptr;
}

admission_ticket& admission_ticket::operator=(admission_ticket&& o) noexcept {
  if (this != &o) {
    reset();
    owner_ = o.owner_;
    source_ = o.source_;
    epoch_ = o.epoch_;
    has_source_ = o.has_source_;
    o.owner_ = nullptr;
  }
  return *this;
}

void admission_ticket::reset() {
  if (owner_) owner_->release(*this);
  owner_ = nullptr;
}

std::optional<asio::ip::address> admission_ticket::source() const {
  if (!has_source_) return std::nullopt;
  const asio::ip::address_v6 v6(source_);
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
  return v6;
}

void admission_ticket::remember(const asio::ip::address& client) {
  source_ = admission::key_of(client);
  has_source_ = true;
}

admission_ticket::key admission::key_of(const asio::ip::address& a) {
  if (a.is_v4()) return asio::ip::make_address_v6(asio::ip::v4_mapped, a.to_v4()).to_bytes();
  return a.to_v6().to_bytes();  // an IPv4-mapped one is already in the IPv4 form above
}

std::size_t admission::key_hash::operator()(const admission_ticket::key& k) const noexcept {
  std::uint64_t high, low;
  std::memcpy(&high, k.data(), 8);
  std::memcpy(&low, k.data() + 8, 8);
  return std::hash<std::uint64_t>()(high * 0x9e3779b97f4a7c15ull ^ low);
}

void admission::set_limits(std::uint32_t max_total, std::uint32_t max_per_source) {
  max_total_.store(max_total, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  max_per_source_ = max_per_source;
  if (max_per_source > 0 && epoch_ == 0) {
    epoch_ = ++last_epoch_;
    if (epoch_ == 0) epoch_ = ++last_epoch_;  // wrapped: 0 means off
  } else if (max_per_source == 0 && epoch_ != 0) {
    epoch_ = 0;
    per_source_.clear();
  }
  per_source_on_.store(epoch_ != 0, std::memory_order_release);
}

admission_ticket admission::admit(const asio::ip::address* client, std::uint32_t leaving) {
  const auto max_total = max_total_.load(std::memory_order_relaxed);
  // Taken first and given back when over: two workers admitting at once never both pass the limit.
  const auto live = total_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (max_total > 0 && live > max_total + leaving) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    return {};
  }
  admission_ticket t;
  t.owner_ = this;
  if (!client) return t;
  t.remember(*client);
  if (!count_in_source(t)) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    t.owner_ = nullptr;
  }
  return t;
}

bool admission::admit_source(admission_ticket& ticket, const asio::ip::address& client) {
  ticket.remember(client);
  return count_in_source(ticket);
}

bool admission::count_in_source(admission_ticket& t) {
  if (!per_source()) return true;
  std::lock_guard lock(mutex_);
  if (epoch_ == 0) return true;  // turned off meanwhile
  auto& n = per_source_[t.source_];
  if (max_per_source_ > 0 && n >= max_per_source_) {
    if (n == 0) per_source_.erase(t.source_);
    return false;
  }
  ++n;
  t.epoch_ = epoch_;
  return true;
}

void admission::count_source(admission_ticket& ticket, const asio::ip::address& client) {
  if (!ticket || !per_source()) return;
  if (!ticket.has_source_) ticket.remember(client);
  std::lock_guard lock(mutex_);
  if (epoch_ == 0 || ticket.epoch_ == epoch_) return;
  ++per_source_[ticket.source_];
  ticket.epoch_ = epoch_;
}

std::uint32_t admission::live_from(const asio::ip::address& client) {
  std::lock_guard lock(mutex_);
  const auto it = per_source_.find(key_of(client));
  return it == per_source_.end() ? 0 : it->second;
}

void admission::release(admission_ticket& t) {
  total_.fetch_sub(1, std::memory_order_relaxed);
  if (t.epoch_ == 0) return;
  std::lock_guard lock(mutex_);
  if (t.epoch_ == epoch_) {  // else counted in a per-source count that was turned off since
    const auto it = per_source_.find(t.source_);
    if (it != per_source_.end() && --it->second == 0) per_source_.erase(it);
  }
  t.epoch_ = 0;
}

namespace {

// A refusal: counted, and one debug line.
void refused(std::atomic<std::uint64_t>& counter, std::int64_t forward, std::string_view what,
             const asio::ip::address& client, std::string_view why) {
  bump(counter);
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("forward {}: {} {} refused: {}", forward, what, client.to_string(), why);
  }
}

constexpr std::string_view by_lists = "not admitted by the allow and deny lists";
constexpr std::string_view by_limit = "over a limit";

}  // namespace

admission_ticket admit_client(const source_filter* filter, admission& counts, forward_stats& stats,
                              std::int64_t forward, const asio::ip::address& client, std::string_view what,
                              std::uint32_t leaving) {
  if (filter && !filter->admits(client)) {
    refused(stats.refused_acl, forward, what, client, by_lists);
    return {};
  }
  auto ticket = counts.admit(&client, leaving);
  if (!ticket) refused(stats.refused_limit, forward, what, client, by_limit);
  return ticket;
}

bool admit_carried(const source_filter* filter, admission& counts, forward_stats& stats, std::int64_t forward,
                   admission_ticket& ticket, const asio::ip::address& client, std::string_view what) {
  if (filter && !filter->admits(client)) {
    refused(stats.refused_acl, forward, what, client, by_lists);
    return false;
  }
  if (counts.admit_source(ticket, client)) return true;
  refused(stats.refused_limit, forward, what, client, by_limit);
  return false;
}

bool still_admitted(const source_filter* filter, admission& counts, admission_ticket& ticket,
                    const asio::ip::address& client) {
  if (filter && !filter->admits(client)) return false;
  counts.count_source(ticket, client);  // nothing unless the per-source limit is on
  return true;
}

void log_cut_off(std::int64_t forward, std::size_t count, std::string_view done, std::string_view noun) {
  if (count == 0) return;
  // An operator's change cut them off: worth one line per change (and worker), unlike a refusal.
  spdlog::info("forward {}: {} {} {}{} whose client is no longer admitted", forward, done, count, noun,
               count == 1 ? "" : "s");
}

}  // namespace relay
