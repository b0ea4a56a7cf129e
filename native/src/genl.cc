#include "genl.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cowdisk {

namespace {

constexpr size_t Align(size_t n) { return (n + NLA_ALIGNTO - 1) & ~static_cast<size_t>(NLA_ALIGNTO - 1); }

constexpr size_t kHeaders = NLMSG_HDRLEN + GENL_HDRLEN;

}  // namespace

bool Attr::U16(uint16_t* out) const {
  if (length < sizeof(*out)) return false;
  std::memcpy(out, data, sizeof(*out));
  return true;
}

bool Attr::U32(uint32_t* out) const {
  if (length < sizeof(*out)) return false;
  std::memcpy(out, data, sizeof(*out));
  return true;
}

std::vector<Attr> ParseAttrs(const uint8_t* data, size_t length) {
  std::vector<Attr> attrs;
  size_t at = 0;
  while (at + NLA_HDRLEN <= length) {
    struct nlattr header;
    std::memcpy(&header, data + at, sizeof(header));
    if (header.nla_len < NLA_HDRLEN || at + header.nla_len > length) break;
    attrs.push_back(Attr{static_cast<uint16_t>(header.nla_type & NLA_TYPE_MASK), data + at + NLA_HDRLEN,
                         static_cast<size_t>(header.nla_len - NLA_HDRLEN)});
    at += Align(header.nla_len);
  }
  return attrs;
}

GenlRequest::GenlRequest(uint16_t family, uint8_t command, uint8_t version) : bytes_(kHeaders, 0) {
  struct nlmsghdr nl = {};
  nl.nlmsg_type = family;
  nl.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  std::memcpy(bytes_.data(), &nl, sizeof(nl));
  struct genlmsghdr genl = {};
  genl.cmd = command;
  genl.version = version;
  std::memcpy(bytes_.data() + NLMSG_HDRLEN, &genl, sizeof(genl));
}

void GenlRequest::Put(uint16_t type, const void* data, size_t length) {
  size_t at = bytes_.size();
  bytes_.resize(at + Align(NLA_HDRLEN + length), 0);
  struct nlattr header;
  header.nla_len = static_cast<uint16_t>(NLA_HDRLEN + length);
  header.nla_type = type;
  std::memcpy(bytes_.data() + at, &header, sizeof(header));
  if (length) std::memcpy(bytes_.data() + at + NLA_HDRLEN, data, length);
}

void GenlRequest::PutU32(uint16_t type, uint32_t value) { Put(type, &value, sizeof(value)); }
void GenlRequest::PutU64(uint16_t type, uint64_t value) { Put(type, &value, sizeof(value)); }
void GenlRequest::PutString(uint16_t type, const std::string& value) { Put(type, value.c_str(), value.size() + 1); }

size_t GenlRequest::BeginNest(uint16_t type) {
  size_t at = bytes_.size();
  Put(static_cast<uint16_t>(type | NLA_F_NESTED), nullptr, 0);
  return at;
}

void GenlRequest::EndNest(size_t handle) {
  uint16_t length = static_cast<uint16_t>(bytes_.size() - handle);
  std::memcpy(bytes_.data() + handle, &length, sizeof(length));
}

const std::vector<uint8_t>& GenlRequest::Finish(uint32_t sequence) {
  struct nlmsghdr nl;
  std::memcpy(&nl, bytes_.data(), sizeof(nl));
  nl.nlmsg_len = static_cast<uint32_t>(bytes_.size());
  nl.nlmsg_seq = sequence;
  std::memcpy(bytes_.data(), &nl, sizeof(nl));
  return bytes_;
}

GenlSocket::~GenlSocket() {
  if (fd_ >= 0) close(fd_);
}

int GenlSocket::Open() {
  fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  return fd_ < 0 ? errno : 0;
}

int GenlSocket::ResolveFamily(const char* name, uint16_t* id) {
  GenlRequest request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  request.PutString(CTRL_ATTR_FAMILY_NAME, name);
  std::vector<std::vector<uint8_t>> replies;
  int err = Transact(request, &replies);
  if (err) return err;
  for (const auto& reply : replies) {
    for (const Attr& attr : ParseAttrs(reply.data(), reply.size())) {
      if (attr.type == CTRL_ATTR_FAMILY_ID && attr.U16(id)) return 0;
    }
  }
  return EPROTO;
}

int GenlSocket::Transact(GenlRequest& request, std::vector<std::vector<uint8_t>>* replies) {
  uint32_t sequence = ++sequence_;
  const std::vector<uint8_t>& bytes = request.Finish(sequence);
  struct sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;

  // A generic-netlink "doit" handler runs inside sendto: its replies and the acknowledgement are
  // queued before sendto returns, so these reads never wait on anything but the kernel.
  std::vector<uint8_t> buffer(64 * 1024);
  for (;;) {
    ssize_t got;
    do {
      got = recv(fd_, buffer.data(), buffer.size(), 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return errno;
    size_t left = static_cast<size_t>(got);
    const uint8_t* at = buffer.data();
    while (left >= NLMSG_HDRLEN) {
      struct nlmsghdr nl;
      std::memcpy(&nl, at, sizeof(nl));
      if (nl.nlmsg_len < NLMSG_HDRLEN || nl.nlmsg_len > left) return EPROTO;
      if (nl.nlmsg_seq == sequence) {
        if (nl.nlmsg_type == NLMSG_ERROR) {
          if (nl.nlmsg_len < NLMSG_HDRLEN + sizeof(int)) return EPROTO;
          int error;
          std::memcpy(&error, at + NLMSG_HDRLEN, sizeof(error));
          return -error;  // 0 is the acknowledgement
        }
        if (nl.nlmsg_type == NLMSG_DONE) return 0;
        if (nl.nlmsg_len >= kHeaders) replies->emplace_back(at + kHeaders, at + nl.nlmsg_len);
      }
      size_t step = NLMSG_ALIGN(nl.nlmsg_len);
      if (step > left) break;
      at += step;
      left -= step;
    }
  }
}

}  // namespace cowdisk
