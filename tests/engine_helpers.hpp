// engine_helpers: driving the engine in tests the way the controller does.
#pragma once

#include "relay/engine.hpp"

#include <catch2/catch.hpp>

namespace test {

// prepare + apply; returns the spec with its bound port.
inline relay::forward_spec start(relay::engine& e, relay::forward_spec s) {
  auto p = e.prepare(s);
  REQUIRE(p);
  s.listen_port = p.value().port;
  e.apply(s, std::move(p.value()));
  return s;
}

}  // namespace test
