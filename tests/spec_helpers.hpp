// spec_helpers: building forward specs in tests.
#pragma once

#include "relay/forward_spec.hpp"

namespace test {

// The one target of a forward with one, made when there is none yet (the API's target_host and
// target_port shorthand, for specs built in code).
inline relay::target_spec& only_target(relay::forward_spec& s) {
  if (s.targets.empty()) s.targets.emplace_back();
  return s.targets.front();
}
inline const relay::target_spec& only_target(const relay::forward_spec& s) { return s.targets.at(0); }

}  // namespace test
