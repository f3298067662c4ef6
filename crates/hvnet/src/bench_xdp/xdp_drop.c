// The trivial program `hvnet bench xdp` attaches to measure the receive path's cost of
// running a program at all: returns XDP_DROP for every frame. Build:
//   clang -O2 -g -target bpf -c xdp_drop.c -o xdp_drop.o
#define SEC(name) __attribute__((section(name), used))
struct xdp_md;
SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
    return 1;
}
char _license[] SEC("license") = "GPL";
