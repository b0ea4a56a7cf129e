// cowdisk_native: what Node cannot do by itself (see src/native.ts for the JavaScript face, the
// only module that loads this). Files and sockets in files.cc, the kernel's nbd driver through
// generic netlink in nbd_netlink.cc and through the older ioctls in nbd_ioctl.cc, the frames of
// version 2 sealed layers (lz4 and SHA-256 on the thread pool) in frames.cc.
#include <node_api.h>

#include "addon.h"

namespace {

napi_value Init(napi_env env, napi_value exports) {
  cowdisk::RegisterFiles(env, exports);
  cowdisk::RegisterNbdNetlink(env, exports);
  cowdisk::RegisterNbdIoctl(env, exports);
  cowdisk::RegisterFrames(env, exports);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
