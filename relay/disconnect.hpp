// disconnect: which socket errors are the ordinary end of a connection rather than a fault.
#pragma once

#include <asio/error.hpp>

#include <system_error>

namespace relay {

inline bool is_ordinary_disconnect(const std::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::operation_aborted || ec == asio::error::timed_out || ec == asio::error::not_connected ||
         ec == asio::error::connection_aborted || ec == asio::error::bad_descriptor;
}

}  // namespace relay
