/* SPDX-License-Identifier: MIT */
/* Drop-in for udpgrm's include/udpgrm.h: the same option numbers, enums, macros and structs,
 * so programs written for udpgrm build and run unchanged against grm. */
#ifndef GRM_UDPGRM_H
#define GRM_UDPGRM_H

#include "grm/abi.h"

#define MAX_BESPOKE_SNI 8
#define BESPOKE_SNI_LEN 62

#endif
