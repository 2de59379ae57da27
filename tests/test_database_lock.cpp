// database_lock: one holder per file, the holder named, and no file left by a failed start.
#include "store/database.hpp"
#include "store/database_lock.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace test;
namespace fs = std::filesystem;

TEST_CASE("a second holder of the database lock is refused with the file and the holder's pid", "[store]") {
  temp_dir dir;
  const auto path = (dir.path / "x.db").string();
  store::database_lock first(path);
  std::string message;
  try {
    store::database_lock second(path);  // flock conflicts between two opens even in one process
  } catch (const store::store_error& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.find(path) != std::string::npos);
  CHECK(message.find("pid " + std::to_string(::getpid())) != std::string::npos);
}

TEST_CASE("the database lock is released with its holder, then taken again", "[store]") {
  temp_dir dir;
  const auto path = (dir.path / "x.db").string();
  { store::database_lock first(path); first.keep(); }
  store::database_lock again(path);
  CHECK(fs::exists(path));
}

TEST_CASE("a database file the lock created goes again unless kept, with SQLite's companions", "[store]") {
  temp_dir dir;
  const auto path = (dir.path / "x.db").string();
  SECTION("not kept: a failed start leaves nothing") {
    {
      store::database_lock lock(path);
      CHECK(fs::exists(path));
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      std::ofstream(path + "-wal") << "w";
      std::ofstream(path + "-shm") << "s";
    }
    CHECK(fs::is_empty(dir.path));
  }
  SECTION("kept") {
    { store::database_lock lock(path); lock.keep(); }
    CHECK(fs::exists(path));
  }
  SECTION("a file that was there before is never removed") {
    std::ofstream(path) << "";
    { store::database_lock lock(path); }
    CHECK(fs::exists(path));
  }
  SECTION("a file put in its place meanwhile is not removed") {
    {
      store::database_lock lock(path);
      std::ofstream(path + ".new") << "someone else's";
      fs::rename(path + ".new", path);
    }
    CHECK(fs::exists(path));
  }
}

TEST_CASE("a database file the lock cannot open is an error naming it", "[store]") {
  temp_dir dir;
  const auto path = (dir.path / "missing-dir" / "x.db").string();
  try {
    store::database_lock lock(path);
    FAIL("no error");
  } catch (const store::store_error& e) {
    CHECK(std::string(e.what()).find("cannot open database " + path) == 0);
  }
}
