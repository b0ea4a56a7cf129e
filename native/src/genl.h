// A minimal generic-netlink client: enough to resolve a family by name, send one request with
// (nested) attributes, and read back the replies and the kernel's acknowledgement. libnl would do
// it too, but it is a build dependency for ~150 lines of framing; the wire format is stable uapi
// (linux/netlink.h, linux/genetlink.h).
//
// Nothing here touches N-API: callers run it on a worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cowdisk {

// One attribute as parsed from a reply: type without the NESTED / BYTEORDER flag bits.
struct Attr {
  uint16_t type;
  const uint8_t* data;
  size_t length;

  bool U16(uint16_t* out) const;
  bool U32(uint32_t* out) const;
};

// Splits a run of attributes; a malformed tail (length past the buffer) is ignored.
std::vector<Attr> ParseAttrs(const uint8_t* data, size_t length);

// A request under construction: netlink header, generic-netlink header, then attributes.
class GenlRequest {
 public:
  GenlRequest(uint16_t family, uint8_t command, uint8_t version);

  void PutU32(uint16_t type, uint32_t value);
  void PutU64(uint16_t type, uint64_t value);
  void PutString(uint16_t type, const std::string& value);
  // Opens a nested attribute; returns the handle EndNest needs.
  size_t BeginNest(uint16_t type);
  void EndNest(size_t handle);

  // The finished message with its length and sequence number filled in.
  const std::vector<uint8_t>& Finish(uint32_t sequence);

 private:
  void Put(uint16_t type, const void* data, size_t length);
  std::vector<uint8_t> bytes_;
};

class GenlSocket {
 public:
  GenlSocket() = default;
  GenlSocket(const GenlSocket&) = delete;
  GenlSocket& operator=(const GenlSocket&) = delete;
  ~GenlSocket();

  // 0 or an errno.
  int Open();
  // ENOENT when no such family is registered (the module is not loaded).
  int ResolveFamily(const char* name, uint16_t* id);
  // Sends the request and waits for the kernel's acknowledgement. The attribute payload of every
  // reply message before it is appended to `replies`. 0 or the errno the kernel answered.
  int Transact(GenlRequest& request, std::vector<std::vector<uint8_t>>* replies);

 private:
  int fd_ = -1;
  uint32_t sequence_ = 0;
};

}  // namespace cowdisk
