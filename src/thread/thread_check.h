/*
 * thread_check.h — the thread calls' argument checks and a message's stored form (thread_check.c). Internal to
 * src/thread/.
 */
#ifndef ENGRAM_THREAD_CHECK_H
#define ENGRAM_THREAD_CHECK_H

#include <stddef.h>

#include "engram/thread.h"

/* The checks every public thread function starts with: clears the thread's last error, then mgr and cb not NULL and
 * thread a valid id (th_check_id). */
int th_check_call(const engram_manager_t *mgr, const char *thread, engram_cb cb);

/* Each returns 0, or an engram__error naming the field (messages[i].content, settings.max_messages). */
int th_check_tree(const cJSON *v, const char *root);
int th_check_settings(const engram_thread_settings_t *s);
int th_check_message(const engram_message_t *m, size_t i);
cJSON *th_add_cs(cJSON *o, const char *name, cJSON *v);
const char *th_role_literal(const char *role);
extern const char th_role_system[]; /* th_role_literal("system"): compare by address */
/* A message's stored object and (*meta) its item metadata, in one block (thread_block.h): cJSON_Delete of the
 * message frees both. nodes[0..2]: the message's "seq", its "created_at_ms", the metadata's "seq". NULL on ENOMEM. */
cJSON *th_prepare_message(const engram_message_t *m, const char *role, const char *id, cJSON **meta, cJSON **nodes);

#endif
