// engine_options: the data-plane tunables, fixed for the life of an engine.
#pragma once

#include <chrono>
#include <cstddef>

namespace relay {

// How TCP bytes move: splice(2) through a pipe (kernel to kernel, no copy into the relay), or
// recv/send through the worker's buffer. `automatic` copies small messages (fewer, cheaper calls:
// lower latency) and splices bulk: a direction switches to splice after a read of 16 KiB or more,
// and back after a splice of less than 4 KiB. `splice` and `copy` force one
// path (tests, diagnosis). Splicing falls back to copying when no pipe can be had.
enum class datapath { automatic, splice, copy };

struct engine_options {
  std::size_t workers = 1;
  // Per resolved address: a target that neither accepts nor refuses in this time counts as down.
  std::chrono::milliseconds connect_timeout{10'000};
  // A connection with one direction finished and no bytes moving for this long is closed
  // (HAProxy's "timeout client-fin"); a peer that vanished entirely is found by TCP keepalive.
  std::chrono::milliseconds half_close_timeout{60'000};
  // During a drain, a UDP session that carries no datagram either way for this long is done (UDP
  // has no end of session; an idle one would otherwise hold the drain to its deadline).
  std::chrono::milliseconds udp_drain_idle_timeout{1'000};
  relay::datapath datapath = relay::datapath::automatic;
};

}  // namespace relay
