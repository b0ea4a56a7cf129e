#include "nbd_geometry.h"

#include <string>

#include "js.h"

namespace cowdisk {

bool GetNbdGeometry(napi_env env, napi_value options, const char* caller, NbdGeometry* out) {
  napi_value sockets;
  bool has_size = false, has_flags = false;
  if (!GetProperty(env, options, "sockets", &sockets) || !GetFdArray(env, sockets, "sockets", &out->sockets) ||
      !GetOptionalInt64(env, options, "sizeBytes", &out->size_bytes, &has_size) ||
      !GetOptionalInt64(env, options, "blockSize", &out->block_size, &out->has_block_size) ||
      !GetOptionalInt64(env, options, "serverFlags", &out->server_flags, &has_flags) ||
      !GetOptionalInt64(env, options, "timeout", &out->timeout, &out->has_timeout)) {
    return false;
  }
  if (!has_size || !has_flags || out->sockets.empty()) {
    ThrowType(env, std::string(caller) + " needs sizeBytes, serverFlags and at least one socket");
    return false;
  }
  return true;
}

}  // namespace cowdisk
