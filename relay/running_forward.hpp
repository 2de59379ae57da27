// running_forward: what the engine holds for a serving forward, whatever its protocol.
#pragma once

#include "relay/connection_info.hpp"
#include "relay/forward_spec.hpp"
#include "relay/ip_prefix.hpp"
#include "relay/listen_socket.hpp"
#include "relay/target_pool.hpp"

#include <memory>
#include <vector>

namespace relay {

// Every method is for the control plane: it posts to the owning worker(s) and waits.
class running_forward {
 public:
  virtual ~running_forward() = default;
  // Serves on `sockets` (bound on the home worker, one per port) besides the ports it serves on
  // already: a range that grew or moved. With `replace`, every listener it had is closed first (a
  // new address or protocol). Call configure() with a spec that holds the new ports first: a
  // connection's target port is its listen port's offset in the range.
  virtual void listen(listen_sockets sockets, bool replace) = 0;
  // Closes the listeners of `ports` only (they left the range): TCP connections that came in on
  // them carry on, UDP sessions end (their replies would have no socket to leave from).
  virtual void close_ports(const std::vector<std::uint16_t>& ports) = 0;
  // Closes every listener; what happens to live traffic is the protocol's business.
  virtual void close_listener() = 0;
  // Takes no new clients (a TCP listener closes, so connections are refused) while live connections
  // and sessions carry on: the first half of a graceful stop.
  virtual void drain() = 0;
  // Targets and settings for what comes next; live connections and sessions keep their target (and
  // count on in its state, which `pool` shares when it keeps the target). `pool` is spec's, built by
  // the engine; the same pool again when only other settings changed.
  virtual void configure(const forward_spec& spec, std::shared_ptr<target_pool> pool) = 0;
  // Listener and all live traffic closed before this returns.
  virtual void stop() = 0;

  // The live TCP connections or UDP sessions with an id above `after`: the `limit` lowest, gathered
  // from each worker in turn (one short job each).
  virtual connection_page connections(std::uint64_t after, std::size_t limit) = 0;
  // Resets connection `id` (both sides) or drops session `id` before this returns, and says what it
  // was; nothing when the forward has none by that id.
  virtual std::optional<connection_info> close_connection(std::uint64_t id) = 0;
  // The same for every one whose client address is in `clients`; how many.
  virtual std::size_t close_connections(const prefix_set& clients) = 0;
};

}  // namespace relay
