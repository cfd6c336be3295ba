/*
 * cpu_kernels_avx512bf16.c: the "avx512bf16" kernel variant: cpu_kernels_avx512.c
 * compiled with VEC_DPBF16, so products with bf16 weights run on vdpbf16ps
 * (AVX512-BF16), twice the multiply-adds per instruction of the fp32 FMA,
 * with x rounded to bf16 first. Not exact: opt-in (NC_CPU_KERNELS=avx512bf16),
 * never picked by "auto"; how far its logits move is measured in
 * dev/kernels/NOTES_CPU.md.
 */
#define VEC_DPBF16 1
#include "cpu_kernels_avx512.c"
