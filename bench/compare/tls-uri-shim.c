/*
 * Preloaded into fio for the TLS measurements (bench/compare/tls.mjs), and nowhere else.
 *
 * fio's nbd engine hands its --uri to nbd_connect_uri without calling
 * nbd_set_uri_allow_local_file, so libnbd refuses the `tls-psk-file` a TLS-PSK URI needs ("local
 * file access (tls-psk-file) is not allowed"). This wraps nbd_create so that every handle fio makes
 * allows it; nothing else about fio or libnbd changes, so plaintext and TLS runs are the same fio
 * jobs through the same client.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>

struct nbd_handle;

struct nbd_handle *nbd_create(void) {
  struct nbd_handle *(*create)(void) = (struct nbd_handle * (*)(void)) dlsym(RTLD_NEXT, "nbd_create");
  int (*allow)(struct nbd_handle *, bool) = (int (*)(struct nbd_handle *, bool))dlsym(RTLD_NEXT, "nbd_set_uri_allow_local_file");
  if (create == NULL) return NULL;
  struct nbd_handle *h = create();
  if (h != NULL && allow != NULL) allow(h, true);
  return h;
}
