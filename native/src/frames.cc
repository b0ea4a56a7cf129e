// The frames of a version 2 sealed layer (docs/FORMAT.md; src/format/frames.ts is the JavaScript
// face and has a portable fallback for a build without this addon).
//
//   sealFrames  one thread-pool job per batch of blocks: each block's SHA-256 (OpenSSL, the copy
//               Node itself links) and each 4 KiB frame zero-checked or lz4-compressed (liblz4).
//               One hop to the pool for a whole batch, where lz4-napi would need one per frame:
//               measured, per-frame async calls cost ~3.5 s of CPU per GiB in hops alone.
//   decodeFrame one frame into the caller's buffer, synchronously: no allocation (lz4-napi's
//               uncompressSync allocates a Buffer per call) and no hop, for the read path.
#include <lz4.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>

#include "addon.h"
#include "js.h"

namespace cowdisk {

namespace {

// FRAME_SIZE, FrameCode and FRAME_MAX_LZ4 in src/format/constants.ts.
constexpr int kFrame = 4096;
constexpr uint16_t kRawCode = kFrame;
constexpr int kMaxLz4 = kFrame - kFrame / 16;
constexpr int kDigest = 32;

struct Bytes {
  uint8_t* data = nullptr;
  size_t length = 0;  // in bytes
};

// A typed array's bytes (any element type: the frame codes come as a Uint16Array).
bool GetBytes(napi_env env, napi_value value, const char* name, Bytes* out) {
  bool typed = false;
  napi_is_typedarray(env, value, &typed);
  if (!typed) {
    ThrowType(env, std::string(name) + " must be a typed array");
    return false;
  }
  napi_typedarray_type type;
  size_t count;
  void* data;
  if (!Check(env, napi_get_typedarray_info(env, value, &type, &count, &data, nullptr, nullptr))) return false;
  out->data = static_cast<uint8_t*>(data);
  out->length = count * (type == napi_uint16_array ? 2 : type == napi_uint32_array ? 4 : 1);
  return true;
}

bool IsZero(const uint8_t* p, size_t n) {
  return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

// Seals a batch: blocks laid end to end in `data`; per block its SHA-256, its frame codes and its
// stored length; the stored frames of every block that is not all raw, packed in block order.
class SealJob : public Job {
 public:
  SealJob(napi_env env, napi_value* arrays, int count, int block_size) : env_(env), count_(count), block_size_(block_size) {
    for (int i = 0; i < 5; i++) napi_create_reference(env, arrays[i], 1, &refs_[i]);
    syscall = "sealFrames";
  }

  ~SealJob() override {
    // Complete() destroys the job on the event loop's thread, where references may be deleted.
    for (auto ref : refs_) napi_delete_reference(env_, ref);
  }

  Bytes data, packed, codes, lengths, digests;

  int Run() override {
    const int frames = block_size_ / kFrame;
    auto* code = reinterpret_cast<uint16_t*>(codes.data);
    auto* length = reinterpret_cast<uint32_t*>(lengths.data);
    uint8_t scratch[kMaxLz4];
    for (int b = 0; b < count_; b++) {
      const uint8_t* block = data.data + static_cast<size_t>(b) * block_size_;
      unsigned int digest_length = kDigest;
      if (EVP_Digest(block, block_size_, digests.data + b * kDigest, &digest_length, EVP_sha256(), nullptr) != 1) return EIO;
      uint8_t* out = packed.data + packed_;
      size_t stored = 0;
      // Raw frames are copied only once a frame that is not raw shows the block is not all raw:
      // an incompressible block is stored as it is, from the caller's buffer.
      int pending_raw = 0;
      bool all_raw = true;
      auto flush_raw = [&](int upto) {
        for (int f = upto - pending_raw; f < upto; f++) {
          std::memcpy(out + stored, block + f * kFrame, kFrame);
          stored += kFrame;
        }
        pending_raw = 0;
      };
      for (int f = 0; f < frames; f++) {
        const uint8_t* frame = block + f * kFrame;
        uint16_t& c = code[b * frames + f];
        if (IsZero(frame, kFrame)) {
          all_raw = false;
          flush_raw(f);
          c = 0;
          continue;
        }
        int n = LZ4_compress_default(reinterpret_cast<const char*>(frame), reinterpret_cast<char*>(scratch), kFrame, kMaxLz4);
        if (n <= 0) {
          c = kRawCode;
          pending_raw++;
          continue;
        }
        all_raw = false;
        flush_raw(f);
        std::memcpy(out + stored, scratch, n);
        stored += n;
        c = static_cast<uint16_t>(n);
      }
      if (all_raw) {
        length[b] = block_size_;
        continue;
      }
      flush_raw(frames);
      length[b] = static_cast<uint32_t>(stored);
      packed_ += stored;
    }
    return 0;
  }

  napi_value Resolve(napi_env env) override { return Number(env, static_cast<double>(packed_)); }

 private:
  napi_env env_;
  napi_ref refs_[5] = {};
  int count_;
  int block_size_;
  size_t packed_ = 0;
};

// sealFrames(data, count, blockSize, packed, codes, lengths, digests) -> Promise<packed bytes>
napi_value SealFrames(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t count, block_size;
  if (!Args(env, info, 7, argv) || !GetInt32(env, argv[1], "count", &count) || !GetInt32(env, argv[2], "blockSize", &block_size)) return nullptr;
  if (count < 0 || block_size < kFrame || block_size % kFrame != 0) {
    ThrowType(env, "count must be >= 0 and blockSize a multiple of 4096");
    return nullptr;
  }
  napi_value arrays[5] = {argv[0], argv[3], argv[4], argv[5], argv[6]};
  auto job = std::make_unique<SealJob>(env, arrays, count, block_size);
  if (!GetBytes(env, argv[0], "data", &job->data) || !GetBytes(env, argv[3], "packed", &job->packed) ||
      !GetBytes(env, argv[4], "codes", &job->codes) || !GetBytes(env, argv[5], "lengths", &job->lengths) ||
      !GetBytes(env, argv[6], "digests", &job->digests)) {
    return nullptr;
  }
  const size_t bytes = static_cast<size_t>(count) * block_size;
  const size_t frames = bytes / kFrame;
  // Every size is checked here, on the event loop, so the job itself cannot write out of bounds.
  if (job->data.length < bytes || job->packed.length < bytes || job->codes.length < frames * 2 ||
      job->lengths.length < static_cast<size_t>(count) * 4 || job->digests.length < static_cast<size_t>(count) * kDigest) {
    ThrowType(env, "sealFrames: a buffer is too small for the batch");
    return nullptr;
  }
  return Queue(env, std::move(job), "cowdisk.sealFrames");
}

// decodeFrame(src, dst) -> bytes decoded into dst, or -1 when src is not an lz4 block that fits
napi_value DecodeFrame(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Bytes src, dst;
  if (!Args(env, info, 2, argv) || !GetBytes(env, argv[0], "src", &src) || !GetBytes(env, argv[1], "dst", &dst)) return nullptr;
  int n = LZ4_decompress_safe(reinterpret_cast<const char*>(src.data), reinterpret_cast<char*>(dst.data), static_cast<int>(src.length),
                              static_cast<int>(dst.length));
  return Number(env, n < 0 ? -1 : n);
}

}  // namespace

void RegisterFrames(napi_env env, napi_value exports) {
  Export(env, exports, {{"sealFrames", SealFrames}, {"decodeFrame", DecodeFrame}});
}

}  // namespace cowdisk
