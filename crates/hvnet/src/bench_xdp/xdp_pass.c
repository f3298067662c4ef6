// The trivial program `hvnet bench xdp` attaches to measure the receive path's cost of
// running a program at all: returns XDP_PASS for every frame. Build:
//   clang -O2 -g -target bpf -c xdp_pass.c -o xdp_pass.o
#define SEC(name) __attribute__((section(name), used))
struct xdp_md;
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
    return 2;
}
char _license[] SEC("license") = "GPL";
