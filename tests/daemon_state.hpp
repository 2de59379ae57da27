// daemon_state: a real store file, engine and controller that can be stopped and started again on
// the same file, as a restart of the daemon does.
#pragma once

#include "api/controller.hpp"
#include "api_fixture.hpp"

#include <memory>
#include <string>

namespace test {

struct daemon_state {
  temp_dir dir;
  std::string path = (dir.path / "daemon.db").string();
  std::unique_ptr<store::forward_store> store;
  std::unique_ptr<relay::engine> engine;
  std::unique_ptr<api::controller> ctl;

  daemon_state() { start(); }
  void start() {
    store = std::make_unique<store::forward_store>(path);
    engine = std::make_unique<relay::engine>(test_engine_options());
    ctl = std::make_unique<api::controller>(*store, *engine);
    ctl->restore();
  }
  // Everything closed: the file may be edited before start().
  void stop() {
    ctl.reset();
    engine.reset();
    store.reset();
  }
  void restart() {
    stop();
    start();
  }
};

}  // namespace test
