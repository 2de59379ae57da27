// forward_store: the desired state, every forward's spec, persisted in SQLite (WAL) with migrations.
#pragma once

#include "relay/forward_spec.hpp"
#include "store/database.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace store {

struct stored_forward {
  relay::forward_spec spec;
  std::string created_at;  // RFC 3339, UTC
  std::string updated_at;
  // Why the row is not one this daemon writes (a hand-edited file): the first field of its document
  // that the field's own check refuses (relay::from_document: a string is kept as it was, a number
  // or an unknown protocol holds a default), with that field's name; or a document that is not
  // JSON ("spec"). Empty for a row the API wrote.
  std::string invalid = {};
  std::string invalid_field = {};
  // Fleet mode: the etcd mod_revision of the document this row copies; 0 on a single host.
  std::int64_t mod_revision = 0;
};

// Every write is committed (and synced) before the call returns. Thread-safe. Throws store_error.
class forward_store {
 public:
  // Opens or creates the file, brings its schema up to date and proves it can write to it (a
  // read-only file, directory or mount is refused here, not at the first change). Every error
  // names the file.
  explicit forward_store(const std::string& path);

  std::vector<stored_forward> list();
  std::optional<stored_forward> get(std::int64_t id);
  // Assigns the id (never reused, even after a delete) and the timestamps.
  stored_forward insert(const relay::forward_spec& spec);
  // Replaces the writable fields of spec.id; nothing when there is no such forward.
  std::optional<stored_forward> update(const relay::forward_spec& spec);
  bool remove(std::int64_t id);
  // A whole new set in one transaction (BEGIN IMMEDIATE ... COMMIT): the forwards of `removed`
  // deleted, those of `changed` rewritten, those of `added` inserted (ids assigned). All or
  // nothing, so a crash leaves the old set or the new one. Returns the added ones, in order.
  std::vector<stored_forward> replace_set(const std::vector<relay::forward_spec>& added,
                                          const std::vector<relay::forward_spec>& changed,
                                          const std::vector<std::int64_t>& removed);

  // Fleet mode's local copy of the shared set (--store etcd). In one transaction: the forwards of
  // `put` written with their own ids (inserted, or replaced keeping created_at), those of `removed`
  // deleted, and `revision` recorded as the etcd revision the copy stands at.
  struct mirrored {
    relay::forward_spec spec;
    std::int64_t mod_revision = 0;
  };
  void mirror(const std::vector<mirrored>& put, const std::vector<std::int64_t>& removed, std::int64_t revision);
  // The revision mirror() last recorded; 0 when the file has never held a copy of a fleet's set.
  std::int64_t mirrored_revision();

  int schema_version();
  static int latest_schema_version();

 private:
  void migrate();
  void prove_writable();
  std::int64_t read_version();
  std::optional<stored_forward> select_one(std::int64_t id);
  // The statements themselves, with mutex_ held.
  stored_forward insert_row(const relay::forward_spec& spec);
  bool update_row(const relay::forward_spec& spec);
  bool delete_row(std::int64_t id);

  std::mutex mutex_;
  database db_;
};

// The current time as RFC 3339 UTC ("2026-11-27T21:28:09Z").
std::string rfc3339_now();

}  // namespace store
