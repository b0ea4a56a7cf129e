// File and socket calls Node has no binding for. Each is one quick system call, done
// synchronously like Node's own fs.*Sync: none of them waits on a device or a peer.
//
//   punchHole   fallocate(PUNCH_HOLE | KEEP_SIZE): frees a range's blocks, size unchanged.
//   seekData    lseek(SEEK_DATA) / seekHole lseek(SEEK_HOLE): where a sparse file's data is,
//               so a raw base can report holes without reading them.
//   lock        an open-file-description (OFD) lock over the whole file, non-blocking. OFD locks
//               belong to the open file, not the process: a second open() in the same process
//               conflicts like another process would, closing an unrelated fd on the same file
//               does not drop it, and it goes away with the last fd of that open file (also when
//               the process dies). qemu locks its images the same way.
//   socketpair  AF_UNIX stream pair: one end for the kernel's nbd driver, one for our server.
//   setIoFlusher  prctl(PR_SET_IO_FLUSHER): the calling thread serves a block device, so the
//               kernel must not make its memory allocations wait on writeback to that device.
//   setSendBuffer  setsockopt(SO_SNDBUF): room in the kernel for a whole large reply, so it leaves in
//               one write instead of one per default-sized (about 200 KiB) piece.
//   readCached  preadv2(RWF_NOWAIT): the bytes the page cache already has, never waiting on the
//               device, so the event loop can read hot data in place and hand only cold reads to
//               the thread pool (the exception to "nothing here waits": it refuses to).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "js.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace cowdisk {

namespace {

// punchHole(fd, offset, length) -> boolean
napi_value PunchHole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t offset, length;
  if (!Args(env, info, 3, argv) || !GetInt32(env, argv[0], "fd", &fd) ||
      !GetInt64(env, argv[1], "offset", &offset) || !GetInt64(env, argv[2], "length", &length)) {
    return nullptr;
  }
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) return Boolean(env, true);
  if (errno == EOPNOTSUPP) return Boolean(env, false);
  ThrowErrno(env, errno, "fallocate");
  return nullptr;
}

// seekData / seekHole (fd, offset) -> offset, or -1 when no data (no hole) lies at or after it.
napi_value Seek(napi_env env, napi_callback_info info, int whence, const char* name) {
  napi_value argv[2];
  int32_t fd;
  int64_t offset;
  if (!Args(env, info, 2, argv) || !GetInt32(env, argv[0], "fd", &fd) ||
      !GetInt64(env, argv[1], "offset", &offset)) {
    return nullptr;
  }
  off_t result = lseek(fd, offset, whence);
  if (result >= 0) return Number(env, static_cast<double>(result));
  if (errno == ENXIO) return Number(env, -1);
  ThrowErrno(env, errno, name);
  return nullptr;
}

napi_value SeekData(napi_env env, napi_callback_info info) { return Seek(env, info, SEEK_DATA, "lseek(SEEK_DATA)"); }
napi_value SeekHole(napi_env env, napi_callback_info info) { return Seek(env, info, SEEK_HOLE, "lseek(SEEK_HOLE)"); }

// lock(fd, exclusive) -> boolean: false when another open file holds a conflicting lock. There
// is no unlock: the lock lives as long as the open file, and cowdisk closes the file to drop it.
napi_value Lock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool exclusive;
  if (!Args(env, info, 2, argv) || !GetInt32(env, argv[0], "fd", &fd) ||
      !GetBool(env, argv[1], "exclusive", &exclusive)) {
    return nullptr;
  }
  struct flock fl = {};
  fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;  // to the end of the file, however large it grows
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return Boolean(env, true);
  if (errno == EAGAIN || errno == EACCES) return Boolean(env, false);
  ThrowErrno(env, errno, "fcntl(F_OFD_SETLK)");
  return nullptr;
}

// socketpair() -> [fd, fd], both close-on-exec so a spawned helper never inherits a disk's socket.
napi_value SocketPair(napi_env env, napi_callback_info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    ThrowErrno(env, errno, "socketpair");
    return nullptr;
  }
  napi_value result, a, b;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, fds[0], &a);
  napi_create_int32(env, fds[1], &b);
  napi_set_element(env, result, 0, a);
  napi_set_element(env, result, 1, b);
  return result;
}

// setIoFlusher() -> boolean: false when the kernel is too old (< 5.6) or we lack CAP_SYS_RESOURCE.
napi_value SetIoFlusher(napi_env env, napi_callback_info) {
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0) return Boolean(env, true);
  if (errno == EINVAL || errno == EPERM) return Boolean(env, false);
  ThrowErrno(env, errno, "prctl(PR_SET_IO_FLUSHER)");
  return nullptr;
}

// setSendBuffer(fd, bytes) -> the size the kernel granted (it doubles what it is asked for and
// caps the request at net.core.wmem_max), or -1 when fd is not a socket.
napi_value SetSendBuffer(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  int32_t bytes;
  if (!Args(env, info, 2, argv) || !GetInt32(env, argv[0], "fd", &fd) || !GetInt32(env, argv[1], "bytes", &bytes)) {
    return nullptr;
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) != 0) {
    if (errno == ENOTSOCK || errno == EBADF) return Number(env, -1);
    ThrowErrno(env, errno, "setsockopt(SO_SNDBUF)");
    return nullptr;
  }
  int granted = 0;
  socklen_t len = sizeof granted;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &granted, &len) != 0) {
    ThrowErrno(env, errno, "getsockopt(SO_SNDBUF)");
    return nullptr;
  }
  return Number(env, granted);
}

// readCached(fd, buffer, position) -> bytes read from the page cache into buffer (0 at end of
// file), -1 when none of it is cached (the read would wait for the device), -2 when this file
// system cannot tell (no RWF_NOWAIT for buffered reads): the caller then reads normally.
napi_value ReadCached(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t position;
  if (!Args(env, info, 3, argv) || !GetInt32(env, argv[0], "fd", &fd) ||
      !GetInt64(env, argv[2], "position", &position)) {
    return nullptr;
  }
  bool isTyped = false;
  napi_is_typedarray(env, argv[1], &isTyped);
  if (!isTyped) {
    ThrowType(env, "buffer must be a Buffer or Uint8Array");
    return nullptr;
  }
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (!Check(env, napi_get_typedarray_info(env, argv[1], &type, &length, &data, nullptr, nullptr))) return nullptr;
  struct iovec iov = {data, length};
  ssize_t n = preadv2(fd, &iov, 1, position, RWF_NOWAIT);
  if (n >= 0) return Number(env, static_cast<double>(n));
  if (errno == EAGAIN) return Number(env, -1);
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) return Number(env, -2);
  ThrowErrno(env, errno, "preadv2(RWF_NOWAIT)");
  return nullptr;
}

}  // namespace

void RegisterFiles(napi_env env, napi_value exports) {
  Export(env, exports,
         {
             {"punchHole", PunchHole},
             {"seekData", SeekData},
             {"seekHole", SeekHole},
             {"lock", Lock},
             {"socketpair", SocketPair},
             {"setIoFlusher", SetIoFlusher},
             {"readCached", ReadCached},
             {"setSendBuffer", SetSendBuffer},
         });
}

}  // namespace cowdisk
