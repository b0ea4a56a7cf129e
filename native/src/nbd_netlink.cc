// The kernel's nbd driver through its generic-netlink family "nbd" (linux/nbd-netlink.h, since
// Linux 4.12): the preferred interface. CONNECT hands the driver already-connected sockets plus
// the disk's geometry in one message and returns at once with the device index; no thread has to
// sit in an ioctl for the device's lifetime, and without an index the kernel picks a free device
// itself, atomically, so two attaches never race for the same one.
//
// Whether a device is in use is read from sysfs (src/kernel/devices.ts), not NBD_CMD_STATUS: the
// driver gives a device a configuration as soon as anyone opens it, so STATUS calls a device that
// is merely held open "connected", while sysfs has a `pid` file only while a device runs.
//
// Every call runs on the thread pool: DISCONNECT waits in the kernel for the receive workers to
// finish, and they may be waiting on replies from our own event loop.
#include <linux/nbd-netlink.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "genl.h"
#include "js.h"
#include "nbd_geometry.h"

namespace cowdisk {

namespace {

// Opens a socket and resolves the "nbd" family: ENOENT means the driver is not loaded.
int OpenNbd(GenlSocket* socket, uint16_t* family) {
  int err = socket->Open();
  return err ? err : socket->ResolveFamily(NBD_GENL_FAMILY_NAME, family);
}

class AvailableJob : public Job {
 public:
  int Run() override {
    syscall = "netlink(CTRL_CMD_GETFAMILY nbd)";
    GenlSocket socket;
    uint16_t family;
    int err = OpenNbd(&socket, &family);
    if (err == ENOENT) return 0;
    found_ = err == 0;
    return err;
  }
  napi_value Resolve(napi_env env) override { return Boolean(env, found_); }

 private:
  bool found_ = false;
};

struct ConnectOptions {
  NbdGeometry disk;
  bool has_index = false;
  int64_t index = 0;
  bool has_backend = false;
  std::string backend;
};

using Replies = std::vector<std::vector<uint8_t>>;

// One request to the nbd family: a subclass adds its attributes and reads the replies.
class NbdJob : public Job {
 public:
  NbdJob(uint8_t command, const char* name) : command_(command) { syscall = name; }

  int Run() override {
    GenlSocket socket;
    uint16_t family;
    int err = OpenNbd(&socket, &family);
    if (err) return err;
    GenlRequest request(family, command_, NBD_GENL_VERSION);
    AddAttributes(&request);
    Replies replies;
    err = socket.Transact(request, &replies);
    return err ? err : ReadReplies(replies);
  }

 protected:
  virtual void AddAttributes(GenlRequest* request) = 0;
  // 0, or an errno when the replies lack what the command promises.
  virtual int ReadReplies(const Replies&) { return 0; }

 private:
  uint8_t command_;
};

class ConnectJob : public NbdJob {
 public:
  explicit ConnectJob(ConnectOptions options)
      : NbdJob(NBD_CMD_CONNECT, "netlink(NBD_CMD_CONNECT)"), options_(std::move(options)) {}

  napi_value Resolve(napi_env env) override {
    napi_value result;
    napi_create_uint32(env, index_, &result);
    return result;
  }

 protected:
  void AddAttributes(GenlRequest* request) override {
    const NbdGeometry& disk = options_.disk;
    if (options_.has_index) request->PutU32(NBD_ATTR_INDEX, static_cast<uint32_t>(options_.index));
    request->PutU64(NBD_ATTR_SIZE_BYTES, disk.size_bytes);
    if (disk.has_block_size) request->PutU64(NBD_ATTR_BLOCK_SIZE_BYTES, disk.block_size);
    request->PutU64(NBD_ATTR_SERVER_FLAGS, disk.server_flags);
    if (disk.has_timeout) request->PutU64(NBD_ATTR_TIMEOUT, disk.timeout);
    // Kernels older than 5.14 do not know this attribute; the family parses liberally and skips it.
    if (options_.has_backend) request->PutString(NBD_ATTR_BACKEND_IDENTIFIER, options_.backend);
    size_t sockets = request->BeginNest(NBD_ATTR_SOCKETS);
    for (int fd : disk.sockets) {
      size_t item = request->BeginNest(NBD_SOCK_ITEM);
      request->PutU32(NBD_SOCK_FD, static_cast<uint32_t>(fd));
      request->EndNest(item);
    }
    request->EndNest(sockets);
  }

  // The kernel answers a successful CONNECT with the index of the device it configured.
  int ReadReplies(const Replies& replies) override {
    for (const auto& reply : replies) {
      for (const Attr& attr : ParseAttrs(reply.data(), reply.size())) {
        if (attr.type == NBD_ATTR_INDEX && attr.U32(&index_)) return 0;
      }
    }
    return EPROTO;
  }

 private:
  ConnectOptions options_;
  uint32_t index_ = 0;
};

class DisconnectJob : public NbdJob {
 public:
  explicit DisconnectJob(uint32_t index) : NbdJob(NBD_CMD_DISCONNECT, "netlink(NBD_CMD_DISCONNECT)"), index_(index) {}
  napi_value Resolve(napi_env env) override { return Undefined(env); }

 protected:
  void AddAttributes(GenlRequest* request) override { request->PutU32(NBD_ATTR_INDEX, index_); }

 private:
  uint32_t index_;
};

// NBD_ATTR_INDEX is a u32: false (with a TypeError thrown) for an index it cannot carry.
bool IndexInRange(napi_env env, int64_t index) {
  if (index <= 0xffffffffLL) return true;
  ThrowType(env, "index is out of range");
  return false;
}

// nbdNetlinkAvailable() -> Promise<boolean>
napi_value Available(napi_env env, napi_callback_info) {
  return Queue(env, std::make_unique<AvailableJob>(), "cowdisk.nbdNetlinkAvailable");
}

// nbdConnect({ index?, sockets, sizeBytes, blockSize?, serverFlags, timeout?, backend? })
//   -> Promise<index>
napi_value Connect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!Args(env, info, 1, argv)) return nullptr;
  ConnectOptions o;
  if (!GetNbdGeometry(env, argv[0], "nbdConnect", &o.disk) ||
      !GetOptionalInt64(env, argv[0], "index", &o.index, &o.has_index) ||
      !GetOptionalString(env, argv[0], "backend", &o.backend, &o.has_backend) ||
      (o.has_index && !IndexInRange(env, o.index))) {
    return nullptr;
  }
  return Queue(env, std::make_unique<ConnectJob>(std::move(o)), "cowdisk.nbdConnect");
}

// nbdDisconnect(index) -> Promise<void>
napi_value Disconnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t index;
  if (!Args(env, info, 1, argv) || !GetInt64(env, argv[0], "index", &index) || !IndexInRange(env, index)) return nullptr;
  return Queue(env, std::make_unique<DisconnectJob>(static_cast<uint32_t>(index)), "cowdisk.nbdDisconnect");
}

}  // namespace

void RegisterNbdNetlink(napi_env env, napi_value exports) {
  Export(env, exports,
         {
             {"nbdNetlinkAvailable", Available},
             {"nbdConnect", Connect},
             {"nbdDisconnect", Disconnect},
         });
}

}  // namespace cowdisk
