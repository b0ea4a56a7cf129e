// Each part of the addon adds its functions to the module's exports.
#pragma once

#include <node_api.h>

namespace cowdisk {

void RegisterFiles(napi_env env, napi_value exports);
void RegisterNbdNetlink(napi_env env, napi_value exports);
void RegisterNbdIoctl(napi_env env, napi_value exports);
void RegisterFrames(napi_env env, napi_value exports);

}  // namespace cowdisk
