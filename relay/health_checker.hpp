// health_checker: a forward's active health checks, run with timers on one worker's event loop.
//
// Every interval_s each target of the pool gets a TCP connect to its host (resolved per check, every
// address tried in turn, as connections do, and from the forward's source_address as they do, so a
// check passes the target's firewall as they would) on health_check.port or the target's own port;
// the check succeeds when a connect completes within timeout_s, and the socket is closed at once. The
// result goes to target_pool::check_result, which applies rise and fall. No thread per check:
// 1,000 forwards of 4 targets at 1 s cost a few percent of one core (README, Health checks).
#pragma once

#include "relay/target_pool.hpp"

#include <asio/io_context.hpp>

#include <memory>

namespace relay {

class health_checker {
 public:
  // Starts checking every target of `pool` by pool->health_check() (which must be set) on `loop`.
  // Call on the loop's thread; the first checks are spread over the first interval.
  static std::shared_ptr<health_checker> start(asio::io_context& loop, std::shared_ptr<target_pool> pool);
  virtual ~health_checker() = default;
  // Cancels every timer and check in flight. Called on the loop's thread, no result reaches the pool
  // afterwards; from another thread, none that is not already being delivered. Idempotent. A checker
  // dropped without it stops as well (its pending handlers hold it weakly).
  virtual void stop() = 0;
  // The pool it was started with: the one whose targets it checks and to which it reports.
  virtual const target_pool* pool() const = 0;
};

}  // namespace relay
