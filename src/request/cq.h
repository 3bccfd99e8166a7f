/* cq.h — completion queues (cq.c): where a call's reply waits for the thread that polls it. */
#ifndef ENGRAM_CQ_H
#define ENGRAM_CQ_H

#include "engram.h"
#include "request/request.h"

/* Queues an answered request on cq (any thread). */
void engram__cq_push(engram_cq_t *cq, engram_request_t *req);

#endif
