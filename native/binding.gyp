{
  "targets": [
    {
      "target_name": "cowdisk_native",
      "sources": [
        "src/addon.cc",
        "src/js.cc",
        "src/files.cc",
        "src/genl.cc",
        "src/nbd_geometry.cc",
        "src/nbd_netlink.cc",
        "src/nbd_ioctl.cc",
        "src/frames.cc"
      ],
      "libraries": ["-llz4"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    }
  ]
}
