/*  queue_internal.h - queue internals visible to the tests. */
#ifndef DIST_QUEUE_INTERNAL_H_INCLUDED
#define DIST_QUEUE_INTERNAL_H_INCLUDED

#include "dist/queue.h"

/* How many times a process inherited the queue's lock from a dead owner
 * and repaired the queue (shared by every process). */
unsigned dist__queue_recoveries(dist_queue_t *self);

/* Bytes of the queue's mapping resident in memory now (mincore): how the
 * tests see a large ring give back what it no longer holds. */
size_t dist__queue_resident(dist_queue_t *self);

#endif
