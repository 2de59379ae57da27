// engine: the relay's facade for the control plane: binds, starts, changes and stops forwards by id.
#pragma once

#include "relay/engine_options.hpp"
#include "relay/forward_spec.hpp"
#include "relay/forward_stats.hpp"
#include "relay/health_checker.hpp"
#include "relay/result.hpp"
#include "relay/running_forward.hpp"
#include "relay/target_guard.hpp"
#include "relay/target_pool.hpp"
#include "relay/worker_pool.hpp"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace relay {

// What a forward is doing: listening, switched off, or unable to listen (with the reason).
enum class forward_state { active, disabled, error };
inline constexpr std::array all_forward_states{forward_state::active, forward_state::disabled, forward_state::error};
// The API's and the metrics' name of a state: "active", "disabled" or "error".
std::string_view to_string(forward_state s);

// Status is kept apart from config: what a forward is doing right now and what it has moved.
struct forward_status {
  forward_state state = forward_state::error;
  std::string error;  // why the state is error; empty otherwise
  stats_snapshot stats;
  std::vector<target_stats> targets;  // in the order of spec.targets
};

// Whether two forwards' listen addresses clash: the same protocol, overlapping ports, and the same
// address or a wildcard on either side (what the kernel would refuse to bind side by side).
bool listen_overlaps(const forward_spec& a, const forward_spec& b);

// prepare()'s error code when a range's listening sockets would not fit the process's descriptor
// limit (RLIMIT_NOFILE) with room left for connections: nothing was bound.
inline constexpr std::errc range_over_budget = std::errc::argument_list_too_long;
// The descriptors a range must leave free for connections: a quarter of the limit, at most this many.
inline constexpr std::uint64_t descriptor_headroom = 4096;

// A change is made in two phases so that disk and runtime never disagree: prepare() does everything
// that can fail (binding a listener) while clients see no difference, then the caller persists the
// change and calls apply(), which cannot fail, or abandon(), which undoes prepare().
// Thread-safe; never call from a worker thread.
class engine {
 public:
  explicit engine(engine_options options);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  struct prepared {
    std::optional<std::size_t> home;  // the worker that owns the listeners
    listen_sockets sockets;           // newly bound listeners by port, not yet serving
    // The sockets replace every listener the forward has (a start, or a new address or protocol);
    // else they join the ones it keeps, and the ports that leave its range close (a range moved).
    bool replace = false;
    std::uint16_t port = 0;      // the listen port `next` ends up with (the bound one for port 0)
    bool released_old = false;   // the old listeners were closed to make room for an overlapping address
  };

  // The daemon's own API (TCP, `port` on each of `addresses`): no connection through a forward may
  // reach it. Set once the API is bound, before the stored forwards come back.
  void set_api_endpoints(const std::vector<std::string>& addresses, std::uint16_t port);
  // Why `next` must not be applied: one of its IP-literal targets leads back into this daemon, to
  // the API, to its own listener, or round a cycle of the enabled forwards as they would be with
  // `next` (see target_guard). Host-name targets are checked before each connect instead. A disabled
  // forward leads nowhere: it is checked when it is enabled.
  std::optional<refusal> check_target(const forward_spec& next) const;

  // A whole new set at once (PUT /api/v1/config): each enabled forward of `set` checked as above
  // against the others of `set` only (ids must differ; a forward to be created may have a negative
  // one). The first refusal, with the index of the forward it is about.
  std::optional<std::pair<std::size_t, refusal>> check_targets(const std::vector<forward_spec>& set) const;
  // For a new set at once: closes the listeners of each forward of `leaving` (going, disabled or
  // moving) whose address one of `wanted` would bind over, so that its ports are free for it. Its
  // live TCP connections carry on; a UDP forward's sessions end. prepare() then binds a released
  // forward's ports anew. Returns the ids released; take_back() binds them again (on failure).
  std::vector<std::int64_t> release_for(const std::vector<std::int64_t>& leaving,
                                        const std::vector<forward_spec>& wanted);
  void take_back(const std::vector<std::int64_t>& ids);
  // A dry run of preparing `wanted` together: binds each port that prepare() would bind, except
  // those held by a forward of `leaving`, keeping each until all are tried (so two of `wanted` on
  // one port clash), then closes them all. The index and error of each that would fail.
  std::vector<std::pair<std::size_t, op_error>> probe(const std::vector<forward_spec>& wanted,
                                                      const std::vector<std::int64_t>& leaving);

  // `next.id` is 0 for a forward that does not exist yet. Binds every port of next's range that the
  // forward does not listen on yet, all or nothing: a range that moves keeps the sockets of the
  // ports it keeps. Refuses a range whose sockets would leave too few descriptors (see
  // range_over_budget) before binding any.
  result<prepared> prepare(const forward_spec& next);
  // `next` carries the id and the final listen port.
  void apply(const forward_spec& next, prepared p);
  void abandon(const forward_spec& next, prepared p);

  // A stored forward that could not start: it is kept, in state "error" with the reason.
  void fail(const forward_spec& spec, std::string reason);
  // Listener and live connections closed before this returns.
  void remove(std::int64_t id);
  forward_status status(std::int64_t id) const;
  // The counters of each port the forward listens on, in port order (empty when it does not listen).
  std::vector<port_snapshot> port_status(std::int64_t id) const;

  // Every forward the engine holds, in id order, with its state and counters (for /metrics).
  struct view {
    forward_spec spec;
    forward_status status;
  };
  std::vector<view> snapshot() const;

  struct census {
    std::size_t active = 0, disabled = 0, error = 0;
    std::uint64_t live = 0;  // open TCP connections and UDP sessions, over all forwards
  };
  census count() const;

  // The first half of a graceful stop: every forward stops taking new clients while live connections
  // and sessions carry on, and no change is accepted any more. shutdown() is the second half.
  void drain();

  std::size_t workers() const { return pool_.size(); }
  // Worker liveness for the watchdog (see worker_pool::ping).
  worker_pool::clock::time_point ping() { return pool_.ping(); }
  bool answered(worker_pool::clock::time_point since) const { return pool_.answered(since); }
  // Closes every listener and connection and stops the workers. Idempotent.
  void shutdown();

  // Forward `id`'s live TCP connections or UDP sessions with an id above `after`, the `limit` lowest
  // (empty when it does not serve). Each worker copies its part in turn; no lock of the engine is
  // held meanwhile, so changes and status go on.
  connection_page connections(std::int64_t id, std::uint64_t after, std::size_t limit);
  // Resets connection `connection` of forward `id` (both sides) or drops the session, and says what it
  // was; nothing when the forward has none by that id.
  std::optional<connection_info> close_connection(std::int64_t id, std::uint64_t connection);
  // The same for every one whose client address is in `clients`; how many.
  std::size_t close_connections(std::int64_t id, const prefix_set& clients);

 private:
  struct entry {
    forward_spec spec;
    std::size_t home = 0;
    std::shared_ptr<forward_stats> stats = std::make_shared<forward_stats>();
    std::shared_ptr<port_stats> ports = std::make_shared<port_stats>();
    std::shared_ptr<running_forward> live;
    std::string error;
    // spec's targets with their health and counters: what live connections pick from and status
    // shows. Replaced (sharing kept targets' state) on each start and each change of the pool's fields.
    std::shared_ptr<target_pool> targets;
    std::shared_ptr<health_checker> checker;  // on the home worker, for `targets`, while live with a health_check
    bool released = false;  // live, its listeners closed by release_for() until apply() or take_back()
  };

  // Binds `ports` of `spec` on worker `home`, all or nothing; a failure on one port of a range names it.
  result<listen_sockets> bind_on(std::size_t home, const forward_spec& spec, const std::vector<std::uint16_t>& ports);
  void close_on(std::size_t home, const listen_sockets& sockets);
  // Why `count` more listening sockets (and their dups) would not fit RLIMIT_NOFILE, if they would not.
  std::optional<op_error> over_budget(const forward_spec& spec, std::size_t count) const;
  std::shared_ptr<running_forward> make_forward(const entry& e, const forward_spec& spec);
  // A new pool for `spec` in e.targets, taking over the kept targets' state from the one before.
  static void renew_targets(entry& e, const forward_spec& spec);
  // Starts or stops e's active health checks to match: running on e.targets while e is live.
  void sync_checks(entry& e);
  // Binds e's own address again after prepare() released it for an overlapping one that failed.
  void take_back_listener(entry& e);
  static forward_status status_of(const entry& e);
  // Gives every worker a guard made from the listening forwards and the API. With mutex_ held.
  void publish_guard();
  // The running forward `id`, or null (not serving, or shut down); the caller holds running_ shared.
  std::shared_ptr<running_forward> live(std::int64_t id) const;

  const engine_options options_;
  // The last id given to a TCP connection or UDP session, by every forward's workers.
  std::atomic<std::uint64_t> connection_ids_{0};
  worker_pool pool_;
  mutable std::mutex mutex_;
  // Held shared by the connection calls, which reach the workers without mutex_, so that
  // shutdown() (exclusive) never stops the workers under them. Taken before mutex_.
  std::shared_mutex running_;
  std::map<std::int64_t, entry> forwards_;
  std::vector<listen_point> api_;
  bool shut_down_ = false;
  bool draining_ = false;
};

}  // namespace relay
