// What both kernel interfaces (netlink and ioctl) tell the nbd driver about a disk: its sockets,
// size, sector size, the server's transmission flags and the request timeout.
#pragma once

#include <node_api.h>

#include <cstdint>
#include <vector>

namespace cowdisk {

struct NbdGeometry {
  std::vector<int> sockets;
  int64_t size_bytes = 0;
  bool has_block_size = false;
  int64_t block_size = 0;
  int64_t server_flags = 0;
  bool has_timeout = false;
  int64_t timeout = 0;
};

// Reads { sockets, sizeBytes, blockSize?, serverFlags, timeout? } from a JS options object;
// false with a TypeError thrown when it is incomplete. `caller` names the function in the message.
bool GetNbdGeometry(napi_env env, napi_value options, const char* caller, NbdGeometry* out);

}  // namespace cowdisk
