// The kernel's nbd driver through the original ioctls (linux/nbd.h): the fallback for kernels
// without the netlink family. The first SET_SOCK claims the device, SET_BLKSIZE / SET_SIZE /
// SET_TIMEOUT / SET_FLAGS and one SET_SOCK per further connection configure it, and then
// NBD_DO_IT runs the device: it blocks until the device is disconnected. It gets a thread of its
// own, not one of libuv's four pool threads, which a long-lived attach would otherwise take away
// from file I/O; when it returns the thread clears the sockets and tells JavaScript through a
// thread-safe function.
#include <fcntl.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "js.h"
#include "nbd_geometry.h"

namespace cowdisk {

namespace {

struct IoctlOptions {
  std::string device;
  NbdGeometry disk;
};

int Ioctl(int fd, unsigned long request, unsigned long arg) {
  int result;
  do {
    result = ioctl(fd, request, arg);
  } while (result < 0 && errno == EINTR);
  return result < 0 ? errno : 0;
}

// Calls the JavaScript onEnd(error | null) when NBD_DO_IT returns.
void CallOnEnd(napi_env env, napi_value on_end, void*, void* data) {
  int err = static_cast<int>(reinterpret_cast<intptr_t>(data));
  if (env == nullptr || on_end == nullptr) return;
  napi_value argument;
  if (err) {
    argument = ErrnoError(env, err, "ioctl(NBD_DO_IT)");
  } else {
    napi_get_null(env, &argument);
  }
  napi_value global;
  napi_get_global(env, &global);
  napi_call_function(env, global, on_end, 1, &argument, nullptr);
}

// What the device thread owns: the configured device's fd and the onEnd it calls.
struct RunningDevice {
  int fd;
  napi_threadsafe_function on_end;
};

void* RunDevice(void* arg) {
  std::unique_ptr<RunningDevice> device(static_cast<RunningDevice*>(arg));
  // A signal landing on this thread would interrupt NBD_DO_IT, and the kernel answers that by
  // tearing the device down under a mounted file system. Signals are for the event loop.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  int err = Ioctl(device->fd, NBD_DO_IT, 0);
  Ioctl(device->fd, NBD_CLEAR_SOCK, 0);
  close(device->fd);
  napi_call_threadsafe_function(device->on_end, reinterpret_cast<void*>(static_cast<intptr_t>(err)), napi_tsfn_blocking);
  napi_release_threadsafe_function(device->on_end, napi_tsfn_release);
  return nullptr;
}

class ConnectJob : public Job {
 public:
  ConnectJob(IoctlOptions options, napi_threadsafe_function on_end)
      : options_(std::move(options)), on_end_(on_end) {}

  ~ConnectJob() override {
    // Still ours when setup failed: the device thread never started.
    if (on_end_) napi_release_threadsafe_function(on_end_, napi_tsfn_abort);
  }

  int Run() override {
    syscall = "open " + options_.device;
    int fd = open(options_.device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = Claim(fd);
    if (err) {
      close(fd);
      return err;
    }
    err = Configure(fd);
    if (!err) err = Start(fd);
    if (err) {
      Ioctl(fd, NBD_CLEAR_SOCK, 0);
      close(fd);
    }
    return err;
  }

  napi_value Resolve(napi_env env) override { return Undefined(env); }

 private:
  // The first NBD_SET_SOCK makes the device ours: the kernel refuses it (EBUSY) while another
  // task sets the device up or runs it, and (EINVAL) on a device netlink connected. Before that
  // nothing may touch the device: SET_SIZE would resize someone else's running disk, and
  // NBD_CLEAR_SOCK, which the kernel allows on any device, would shut down its sockets.
  int Claim(int fd) {
    syscall = "ioctl(NBD_SET_SOCK)";
    return Ioctl(fd, NBD_SET_SOCK, options_.disk.sockets[0]);
  }

  // Once claimed: the geometry, then the remaining connections.
  int Configure(int fd) {
    const NbdGeometry& disk = options_.disk;
    int err;
    syscall = "ioctl(NBD_SET_BLKSIZE)";
    if (disk.has_block_size && (err = Ioctl(fd, NBD_SET_BLKSIZE, disk.block_size))) return err;
    syscall = "ioctl(NBD_SET_SIZE)";
    if ((err = Ioctl(fd, NBD_SET_SIZE, disk.size_bytes))) return err;
    syscall = "ioctl(NBD_SET_TIMEOUT)";
    if (disk.has_timeout && (err = Ioctl(fd, NBD_SET_TIMEOUT, disk.timeout))) return err;
    syscall = "ioctl(NBD_SET_FLAGS)";
    if ((err = Ioctl(fd, NBD_SET_FLAGS, disk.server_flags))) return err;
    syscall = "ioctl(NBD_SET_SOCK)";
    for (size_t i = 1; i < disk.sockets.size(); i++) {
      if ((err = Ioctl(fd, NBD_SET_SOCK, disk.sockets[i]))) return err;
    }
    return 0;
  }

  // Hands the fd and onEnd to a detached device thread. pthread_create rather than std::thread:
  // this addon is built without exceptions, so std::thread's failure (EAGAIN at the thread
  // limit) would abort the process, where this returns the errno and Run() cleans up.
  int Start(int fd) {
    syscall = "pthread_create";
    auto* device = new RunningDevice{fd, on_end_};
    pthread_t thread;
    int err = pthread_create(&thread, nullptr, RunDevice, device);
    if (err) {
      delete device;
      return err;
    }
    pthread_detach(thread);
    on_end_ = nullptr;
    return 0;
  }

  IoctlOptions options_;
  napi_threadsafe_function on_end_;
};

class DisconnectJob : public Job {
 public:
  explicit DisconnectJob(std::string device) : device_(std::move(device)) {}
  int Run() override {
    syscall = "open " + device_;
    int fd = open(device_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno;
    syscall = "ioctl(NBD_DISCONNECT)";
    int err = Ioctl(fd, NBD_DISCONNECT, 0);
    close(fd);
    return err;
  }
  napi_value Resolve(napi_env env) override { return Undefined(env); }

 private:
  std::string device_;
};

// nbdIoctlConnect({ device, sockets, sizeBytes, blockSize?, serverFlags, timeout? }, onEnd)
//   -> Promise<void>, resolved once the device runs; onEnd(error | null) when it stops.
napi_value Connect(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!Args(env, info, 2, argv)) return nullptr;
  IoctlOptions o;
  napi_value device;
  if (!GetProperty(env, argv[0], "device", &device) || !GetString(env, device, "device", &o.device) ||
      !GetNbdGeometry(env, argv[0], "nbdIoctlConnect", &o.disk) ||
      !Expect(env, argv[1], napi_function, "onEnd", "a function")) {
    return nullptr;
  }
  napi_value name;
  napi_create_string_utf8(env, "cowdisk.nbdDoIt", NAPI_AUTO_LENGTH, &name);
  napi_threadsafe_function on_end;
  if (!Check(env, napi_create_threadsafe_function(env, argv[1], nullptr, name, 0, 1, nullptr, nullptr, nullptr,
                                                  CallOnEnd, &on_end))) {
    return nullptr;
  }
  return Queue(env, std::make_unique<ConnectJob>(std::move(o), on_end), "cowdisk.nbdIoctlConnect");
}

// nbdIoctlDisconnect(device) -> Promise<void>
napi_value Disconnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  std::string device;
  if (!Args(env, info, 1, argv) || !GetString(env, argv[0], "device", &device)) return nullptr;
  return Queue(env, std::make_unique<DisconnectJob>(std::move(device)), "cowdisk.nbdIoctlDisconnect");
}

}  // namespace

void RegisterNbdIoctl(napi_env env, napi_value exports) {
  Export(env, exports,
         {
             {"nbdIoctlConnect", Connect},
             {"nbdIoctlDisconnect", Disconnect},
         });
}

}  // namespace cowdisk
