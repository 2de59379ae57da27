// database: SQLite calls with every error turned into a store_error that says what failed.
#include "store/database.hpp"

namespace store {

statement::statement(sqlite3* db, std::string_view sql) : db_(db) {
  check(sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr), "prepare");
}

statement::~statement() { sqlite3_finalize(stmt_); }

statement& statement::bind(int index, std::int64_t value) {
  check(sqlite3_bind_int64(stmt_, index, value), "bind");
  return *this;
}

statement& statement::bind(int index, std::string_view value) {
  check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT), "bind");
  return *this;
}

bool statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  check(rc, "step");
  return false;
}

std::int64_t statement::column_int(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string statement::column_text(int index) const {
  auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  return text ? std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, index))) : std::string();
}

void statement::check(int rc, const char* what) const {
  if (rc != SQLITE_OK) {
    throw store_error(std::string("sqlite ") + what + ": " + sqlite3_errmsg(db_) + " (" + sqlite3_errstr(rc) + ")");
  }
}

database::database(const std::string& path) {
  int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw store_error("cannot open database " + path + ": " + why);
  }
  sqlite3_busy_timeout(db_, 5000);
}

database::~database() { sqlite3_close(db_); }

void database::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw store_error("sqlite: " + why);
  }
}

transaction::transaction(database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

transaction::~transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (const store_error&) {
      // A failed COMMIT may already have rolled back; nothing is left to undo.
    }
  }
}

void transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace store
