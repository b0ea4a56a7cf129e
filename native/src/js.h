// The few N-API helpers every part of the addon shares: reading arguments, turning an errno into
// a Node-style Error (code "EBUSY", errno, syscall) that src/kernel can map to a CowdiskError, and
// running a blocking job on libuv's thread pool behind a Promise so the event loop never waits on
// the kernel.
#pragma once

#include <node_api.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cowdisk {

// Throws a pending JS exception when a napi call fails; the wrappers return nullptr right after.
bool Check(napi_env env, napi_status status);

// A Node-style errno error: message "EBUSY: Device or resource busy, <syscall>", with code,
// errno (negative, as Node's own) and syscall properties.
napi_value ErrnoError(napi_env env, int err, const std::string& syscall);
void ThrowErrno(napi_env env, int err, const std::string& syscall);
void ThrowType(napi_env env, const std::string& message);

// false (with the TypeError "<name> must be <what>" thrown) unless `value` is of type `expected`.
bool Expect(napi_env env, napi_value value, napi_valuetype expected, const char* name, const char* what);

// Argument readers: false (with a TypeError thrown) when the value has the wrong type.
bool GetInt32(napi_env env, napi_value value, const char* name, int32_t* out);
bool GetInt64(napi_env env, napi_value value, const char* name, int64_t* out);
bool GetString(napi_env env, napi_value value, const char* name, std::string* out);
bool GetBool(napi_env env, napi_value value, const char* name, bool* out);
bool GetFdArray(napi_env env, napi_value value, const char* name, std::vector<int>* out);

// Optional object properties: *present is false when the property is missing or undefined.
bool GetOptionalInt64(napi_env env, napi_value object, const char* name, int64_t* out, bool* present);
bool GetOptionalString(napi_env env, napi_value object, const char* name, std::string* out, bool* present);
bool GetProperty(napi_env env, napi_value object, const char* name, napi_value* out);

// Reads `count` arguments; throws a TypeError when fewer were given.
bool Args(napi_env env, napi_callback_info info, size_t count, napi_value* argv, napi_value* self = nullptr);

// A blocking job for the thread pool. Run() happens off the event loop and returns 0 or an errno;
// Resolve() builds the Promise's value back on the event loop.
class Job {
 public:
  virtual ~Job() = default;
  virtual int Run() = 0;
  virtual napi_value Resolve(napi_env env) = 0;
  // The system call named in the error when Run() fails.
  std::string syscall;
};

// Queues the job and returns its Promise (or nullptr with an exception pending).
napi_value Queue(napi_env env, std::unique_ptr<Job> job, const char* name);

napi_value Undefined(napi_env env);
napi_value Boolean(napi_env env, bool value);
napi_value Number(napi_env env, double value);

// Adds functions to the module's exports.
void Export(napi_env env, napi_value exports, std::initializer_list<std::pair<const char*, napi_callback>> functions);

}  // namespace cowdisk
