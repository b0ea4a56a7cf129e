#include "js.h"

#include <cerrno>
#include <cstring>

namespace cowdisk {

namespace {

// errno names for the codes callers act on; anything else is reported as "E<number>".
const char* ErrnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case EPIPE: return "EPIPE";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINTR: return "EINTR";
    case EMSGSIZE: return "EMSGSIZE";
    case EPROTO: return "EPROTO";
    case ECANCELED: return "ECANCELED";
    default: return nullptr;
  }
}

struct Work {
  std::unique_ptr<Job> job;
  napi_deferred deferred = nullptr;
  napi_async_work work = nullptr;
  int err = 0;
};

void Execute(napi_env, void* data) {
  auto* w = static_cast<Work*>(data);
  w->err = w->job->Run();
}

void Complete(napi_env env, napi_status status, void* data) {
  std::unique_ptr<Work> w(static_cast<Work*>(data));
  napi_value value;
  if (status != napi_ok) {
    napi_reject_deferred(env, w->deferred, ErrnoError(env, ECANCELED, w->job->syscall));
  } else if (w->err != 0) {
    napi_reject_deferred(env, w->deferred, ErrnoError(env, w->err, w->job->syscall));
  } else {
    value = w->job->Resolve(env);
    if (value == nullptr) {
      // Resolve threw: hand the exception to the Promise instead of leaving it pending.
      napi_value exception;
      napi_get_and_clear_last_exception(env, &exception);
      napi_reject_deferred(env, w->deferred, exception);
    } else {
      napi_resolve_deferred(env, w->deferred, value);
    }
  }
  napi_delete_async_work(env, w->work);
}

}  // namespace

bool Check(napi_env env, napi_status status) {
  if (status == napi_ok) return true;
  // The failed call's description first: every N-API call, napi_is_exception_pending included,
  // resets it. The message is a static string, so it outlives the calls after it.
  const napi_extended_error_info* info = nullptr;
  napi_get_last_error_info(env, &info);
  const char* message = info && info->error_message ? info->error_message : "N-API call failed";
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, nullptr, message);
  return false;
}

napi_value Undefined(napi_env env) {
  napi_value value;
  napi_get_undefined(env, &value);
  return value;
}

napi_value Boolean(napi_env env, bool value) {
  napi_value result;
  napi_get_boolean(env, value, &result);
  return result;
}

napi_value Number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

napi_value ErrnoError(napi_env env, int err, const std::string& syscall) {
  const char* name = ErrnoName(err);
  std::string code = name ? name : "E" + std::to_string(err);
  std::string message = code + ": " + std::strerror(err) + ", " + syscall;
  napi_value msg, code_value, errno_value, syscall_value, error;
  napi_create_string_utf8(env, message.c_str(), message.size(), &msg);
  napi_create_string_utf8(env, code.c_str(), code.size(), &code_value);
  napi_create_int32(env, -err, &errno_value);
  napi_create_string_utf8(env, syscall.c_str(), syscall.size(), &syscall_value);
  napi_create_error(env, code_value, msg, &error);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  return error;
}

void ThrowErrno(napi_env env, int err, const std::string& syscall) {
  napi_throw(env, ErrnoError(env, err, syscall));
}

void ThrowType(napi_env env, const std::string& message) {
  napi_throw_type_error(env, nullptr, message.c_str());
}

bool Args(napi_env env, napi_callback_info info, size_t count, napi_value* argv, napi_value* self) {
  size_t argc = count;
  if (!Check(env, napi_get_cb_info(env, info, &argc, argv, self, nullptr))) return false;
  if (argc < count) {
    ThrowType(env, "expected " + std::to_string(count) + " argument(s), got " + std::to_string(argc));
    return false;
  }
  return true;
}

bool Expect(napi_env env, napi_value value, napi_valuetype expected, const char* name, const char* what) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type == expected) return true;
  ThrowType(env, std::string(name) + " must be " + what);
  return false;
}

bool GetInt32(napi_env env, napi_value value, const char* name, int32_t* out) {
  return Expect(env, value, napi_number, name, "a number") && Check(env, napi_get_value_int32(env, value, out));
}

bool GetInt64(napi_env env, napi_value value, const char* name, int64_t* out) {
  if (!Expect(env, value, napi_number, name, "a number")) return false;
  double d;
  if (!Check(env, napi_get_value_double(env, value, &d))) return false;
  // Offsets and sizes are exact integers below 2^53; reject fractions and negatives here so a
  // caller's mistake never reaches a system call as a truncated value.
  if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<int64_t>(d))) {
    ThrowType(env, std::string(name) + " must be a non-negative integer");
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool GetString(napi_env env, napi_value value, const char* name, std::string* out) {
  if (!Expect(env, value, napi_string, name, "a string")) return false;
  size_t length = 0;
  if (!Check(env, napi_get_value_string_utf8(env, value, nullptr, 0, &length))) return false;
  out->assign(length, '\0');
  return Check(env, napi_get_value_string_utf8(env, value, out->data(), length + 1, &length));
}

bool GetBool(napi_env env, napi_value value, const char* name, bool* out) {
  return Expect(env, value, napi_boolean, name, "a boolean") && Check(env, napi_get_value_bool(env, value, out));
}

bool GetFdArray(napi_env env, napi_value value, const char* name, std::vector<int>* out) {
  bool is_array = false;
  napi_is_array(env, value, &is_array);
  if (!is_array) {
    ThrowType(env, std::string(name) + " must be an array of file descriptors");
    return false;
  }
  uint32_t length = 0;
  napi_get_array_length(env, value, &length);
  for (uint32_t i = 0; i < length; i++) {
    napi_value item;
    int32_t fd;
    if (!Check(env, napi_get_element(env, value, i, &item))) return false;
    if (!GetInt32(env, item, name, &fd)) return false;
    out->push_back(fd);
  }
  return true;
}

bool GetProperty(napi_env env, napi_value object, const char* name, napi_value* out) {
  return Check(env, napi_get_named_property(env, object, name, out));
}

// The property's value, and whether it is there at all (undefined counts as missing).
bool GetOptional(napi_env env, napi_value object, const char* name, napi_value* value, bool* present) {
  if (!GetProperty(env, object, name, value)) return false;
  napi_valuetype type;
  napi_typeof(env, *value, &type);
  *present = type != napi_undefined;
  return true;
}

bool GetOptionalInt64(napi_env env, napi_value object, const char* name, int64_t* out, bool* present) {
  napi_value value;
  return GetOptional(env, object, name, &value, present) && (!*present || GetInt64(env, value, name, out));
}

bool GetOptionalString(napi_env env, napi_value object, const char* name, std::string* out, bool* present) {
  napi_value value;
  return GetOptional(env, object, name, &value, present) && (!*present || GetString(env, value, name, out));
}

void Export(napi_env env, napi_value exports, std::initializer_list<std::pair<const char*, napi_callback>> functions) {
  for (const auto& [name, callback] : functions) {
    napi_value fn;
    napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, nullptr, &fn);
    napi_set_named_property(env, exports, name, fn);
  }
}

napi_value Queue(napi_env env, std::unique_ptr<Job> job, const char* name) {
  auto* w = new Work();
  w->job = std::move(job);
  napi_value promise, resource_name;
  if (!Check(env, napi_create_promise(env, &w->deferred, &promise)) ||
      !Check(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name)) ||
      !Check(env, napi_create_async_work(env, nullptr, resource_name, Execute, Complete, w, &w->work)) ||
      !Check(env, napi_queue_async_work(env, w->work))) {
    delete w;
    return nullptr;
  }
  return promise;
}

}  // namespace cowdisk
