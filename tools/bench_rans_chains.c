/* The rANS decoder kernel alone: 1, 2 or 4 lanes of N = 16 decoded in one loop (2, 4 or 8
 * dependency chains), to see whether it is latency- or throughput-bound (docs/lossless.md).
 * Build and run from the repository root:
 *   gcc -O3 -std=gnu11 -I"$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")" \
 *       tools/bench_rans_chains.c -o /tmp/bench_rans_chains -lm \
 *       -L"$(python -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")" -lpython3.11
 *   LD_LIBRARY_PATH=... /tmp/bench_rans_chains
 * Synthetic lanes: Gaussian bytes of sd 2.5 (exponent-like) and sd 40 (mantissa-like). */
#include "../codec/wcodec/codecs/_crans.c"
#include <time.h>
#include <math.h>
#include <stdlib.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  __builtin_cpu_init(); have_avx2 = 1; init_perm(); init_cmp();
  const size_t d = 262144; const unsigned R = 12, N = 16, K = 4;
  uint8_t *lane[K]; uint8_t *body[K]; size_t blen[K];
  srand(1);
  for (unsigned l=0;l<K;l++){
    lane[l]=malloc(d);
    for(size_t i=0;i<d;i++){ double u=(rand()+1.0)/(RAND_MAX+2.0), v=(rand()+1.0)/(RAND_MAX+2.0);
      double g=sqrt(-2*log(u))*cos(6.283185307*v); int s=(int)(120+ (l&1? 40.0:2.5)*g); if(s<0)s=0; if(s>255)s=255; lane[l][i]=(uint8_t)s; }
    /* counts -> freqs (simple normalization) */
    uint64_t c[256]={0}; for(size_t i=0;i<d;i++) c[lane[l][i]]++;
    uint32_t f[256]={0}; uint32_t tot=0; int mx=0;
    for(int s=0;s<256;s++){ if(c[s]){ f[s]=(uint32_t)(c[s]*4096/d); if(!f[s])f[s]=1; tot+=f[s]; if(f[s]>f[mx])mx=s;} }
    f[mx] += 4096 - tot;
    /* header: R, N, a=0, b=255, w=16, base=0, table 512 bytes */
    size_t hs = 7 + 512;
    body[l] = malloc(hs + 4*N + 2*d + 64);
    uint8_t *o = body[l]; o[0]=R;o[1]=N;o[2]=0;o[3]=255;o[4]=16;o[5]=0;o[6]=0;
    for(int s=0;s<256;s++){ o[7+2*s]=f[s]&255; o[8+2*s]=f[s]>>8; }
    uint32_t x[32]; size_t cap = d + 16; uint16_t *wend = (uint16_t*)(o + hs + 4*N) + cap;
    ptrdiff_t nw = encode_impl(lane[l], d, f, R, N, x, wend, cap);
    memcpy(o+hs, x, 4*N); memmove(o+hs+4*N, wend-nw, 2*nw); blen[l] = hs+4*N+2*nw;
  }
  uint8_t *out[K]; for(unsigned l=0;l<K;l++) out[l]=malloc(d);
  uint32_t *ent[K]; for(unsigned l=0;l<K;l++) ent[l]=malloc(4096*4);
  for (unsigned k = 1; k <= 4; k *= 2) {
    double best = 1e9;
    for (int rep = 0; rep < 30; rep++) {
      lane_t L[K]; lane_t *ls[K]; const uint32_t *es[K]; size_t is[K], ps[K];
      for (unsigned l=0;l<K;l++){ parse_lane(body[l], blen[l], &L[l]); build_table(&L[l], ent[l], NULL); ls[l]=&L[l]; es[l]=ent[l]; }
      double t0 = now();
      for (unsigned g = 0; g < K; g += k) decode_avx2(ls+g, es+g, out+g, d, k, is+g, ps+g);
      double t = now()-t0; if (t<best) best=t;
      int ok=1; for(unsigned l=0;l<K;l++) ok &= memcmp(out[l], lane[l], is[l]-64)==0;
      if(!ok){printf("MISMATCH\n");}
    }
    printf("k=%u lanes together (%u chains): %.2f G sym/s\n", k, 2*k, K*d/best/1e9);
  }
  return 0;
}
