/* SPDX-License-Identifier: MIT */
/* A C app written for udpgrm, built against the installed <grm/udpgrm.h> only: the option
 * numbers, enums and struct layouts of udpgrm's ABI. Without grm hooks attached, every option
 * answers ENOPROTOOPT. */
#define _DEFAULT_SOURCE /* SO_REUSEPORT under -std=c11 */
#include <errno.h>
#include <grm/udpgrm.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#ifdef GRM_ABI_VERSION
#error "abi.h shows its daemon<->BPF section to apps"
#endif

_Static_assert(sizeof(struct udp_grm_dissector) == 632, "udpgrm's dissector layout");
_Static_assert(sizeof(struct udp_grm_socket_gen) == 12, "udpgrm's socket_gen layout");
_Static_assert(UDP_GRM_WORKING_GEN == 200 && UDP_GRM_SOCKET_GEN == 201 &&
                   UDP_GRM_DISSECTOR == 202 && UDP_GRM_FLOW_ASSURE == 203 &&
                   UDP_GRM_SOCKET_APP == 204,
               "udpgrm's option numbers");
_Static_assert(DISSECTOR_FLOW == 0 && DISSECTOR_CBPF == 1 && DISSECTOR_BESPOKE == 3 &&
                   DISSECTOR_NOOP == 4,
               "udpgrm's dissector types");
_Static_assert(MAX_INSTR == 64 && LABEL_SZ == 100 && MAX_BESPOKE_SNI == 8, "udpgrm's limits");

int main(void)
{
    int failures = 0;
    int one = 1;
    struct sockaddr_in sin;
    struct udp_grm_dissector d;
    struct udp_grm_socket_gen g;
    unsigned int gen = 0;
    socklen_t len = sizeof(gen);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr*)&sin, sizeof(sin)) != 0) {
        perror("sdk_app_c: udp socket on 127.0.0.1");
        return 1;
    }
    if (getsockopt(fd, IPPROTO_UDP, UDP_GRM_WORKING_GEN, &gen, &len) == 0 || errno != ENOPROTOOPT) {
        fprintf(stderr, "FAIL: getsockopt UDP_GRM_WORKING_GEN without grm: want ENOPROTOOPT\n");
        failures++;
    }
    memset(&d, 0, sizeof(d));
    d.dissector_type = DISSECTOR_NOOP;
    if (setsockopt(fd, GRM_SOL_UDP, UDP_GRM_DISSECTOR, &d, sizeof(d)) == 0 ||
        errno != ENOPROTOOPT) {
        fprintf(stderr, "FAIL: setsockopt UDP_GRM_DISSECTOR without grm: want ENOPROTOOPT\n");
        failures++;
    }
    len = sizeof(g);
    if (getsockopt(fd, GRM_SOL_UDP, UDP_GRM_SOCKET_GEN, &g, &len) == 0 || errno != ENOPROTOOPT) {
        fprintf(stderr, "FAIL: getsockopt UDP_GRM_SOCKET_GEN without grm: want ENOPROTOOPT\n");
        failures++;
    }
    close(fd);
    if (failures)
        return 1;
    puts("sdk_app_c: ok");
    return 0;
}
