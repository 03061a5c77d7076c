/* IQ2_XXS grid and sign tables (format data; see iq2_tables.c). */
#ifndef DS4_IQ2_TABLES_H
#define DS4_IQ2_TABLES_H

#include <stdint.h>

extern const uint64_t ds4_iq2xxs_grid[256]; /* 8 magnitudes per entry, byte j = element j */
extern const uint8_t ds4_ksigns_iq2xs[128];  /* 7-bit index -> 8-bit sign mask, even parity */

/* The grid as bit planes: bit j of is25[e] / is43[e] is set where element j
 * of entry e is 25 / 43 (else it is 8); the SIMD kernels look these up. */
void ds4_iq2xxs_grid_planes(uint8_t is25[256], uint8_t is43[256]);

#endif
