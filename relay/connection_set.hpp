// connection_set: the live connections of one forward on one worker, so they can all be closed at
// once, listed, and closed one by one.
#pragma once

#include "relay/admission.hpp"
#include "relay/connection_info.hpp"
#include "relay/ip_prefix.hpp"

#include <list>

namespace relay {

// Anything a forward can cut off: a TCP session today, a UDP session later.
class stoppable {
 public:
  virtual void stop() = 0;
  // Closes at once with a reset: its client is no longer admitted (a PATCH denied it).
  virtual void cut_off() = 0;
  // Its slot in the forward's counts, which keeps the client's address (ticket().source()).
  virtual admission_ticket& ticket() = 0;
  // Its id (engine-wide, ascending), or 0 once it is closed: then it is neither listed nor closed again.
  virtual std::uint64_t connection_id() const = 0;
  // What the connections list shows of it. Same worker only, and only while it has an id.
  virtual connection_info describe() const = 0;

 protected:
  ~stoppable() = default;
};

// Touched only on its worker's thread, so it needs no lock.
class connection_set {
 public:
  // Keeps a connection listed for as long as it lives (RAII); empty when the set was already closed.
  class registration {
   public:
    registration() = default;
    registration(connection_set* set, std::list<stoppable*>::iterator it) : set_(set), it_(it) {}
    registration(registration&& o) noexcept : set_(o.set_), it_(o.it_) { o.set_ = nullptr; }
    registration& operator=(registration&& o) noexcept {
      if (this != &o) {
        reset();
        set_ = o.set_;
        it_ = o.it_;
        o.set_ = nullptr;
      }
      return *this;
    }
    ~registration() { reset(); }
    void reset() {
      if (set_) set_->items_.erase(it_);
      set_ = nullptr;
    }
    explicit operator bool() const { return set_ != nullptr; }

   private:
    connection_set* set_ = nullptr;
    std::list<stoppable*>::iterator it_;
  };

  registration add(stoppable& c) {
    if (closed_) return {};
    return {this, items_.insert(items_.end(), &c)};
  }

  // Stops every listed connection and refuses new ones from now on.
  void close() {
    closed_ = true;
    for (auto* c : items_) c->stop();  // stop() only cancels; nothing leaves the list during this loop
  }

  std::size_t size() const { return items_.size(); }

  // Of the connections with an id above `after`, the `limit` lowest (see select_page).
  connection_page page(std::uint64_t after, std::size_t limit) const {
    return select_page(items_.begin(), items_.end(), after, limit, [](const stoppable* c) { return c->connection_id(); },
                       [](const stoppable* c) { return c->describe(); });
  }

  // Resets connection `id` (both sides, cut_off) and says what it was; nothing when none has that id.
  std::optional<connection_info> close(std::uint64_t id) {
    for (auto* c : items_) {
      if (c->connection_id() != id) continue;
      auto info = c->describe();
      c->cut_off();  // cut_off() only closes; its handlers take it out of the list later
      return info;
    }
    return std::nullopt;
  }

  // Resets every connection whose client address is in `clients`; how many.
  std::size_t close(const prefix_set& clients) {
    std::vector<stoppable*> matched;
    for (auto* c : items_) {
      if (c->connection_id() != 0 && clients.contains(c->describe().client_address)) matched.push_back(c);
    }
    for (auto* c : matched) c->cut_off();
    return matched.size();
  }

  // Calls f(stoppable&) for each listed connection; f must not stop any (collect them, stop after).
  template <class F>
  void for_each(F&& f) {
    for (auto* c : items_) f(*c);
  }

 private:
  std::list<stoppable*> items_;
  bool closed_ = false;
};

}  // namespace relay
