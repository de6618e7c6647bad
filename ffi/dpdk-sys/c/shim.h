/*
 * Exported wrappers for the DPDK `static inline` functions the Rust side uses. bindgen cannot
 * bind inline functions, so each one gets a real symbol here, prefixed `naam_`.
 */
#ifndef NAAM_DPDK_SHIM_H
#define NAAM_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t naam_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                           uint16_t nb_pkts);
uint16_t naam_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                           uint16_t nb_pkts);

struct rte_mbuf *naam_pktmbuf_alloc(struct rte_mempool *mp);
int naam_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void naam_pktmbuf_free(struct rte_mbuf *m);
void naam_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);

/* rte_pktmbuf_mtod(m, void *): the start of the data in the first segment. */
void *naam_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t naam_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t naam_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t naam_pktmbuf_nb_segs(const struct rte_mbuf *m);
/* Sets data_len and pkt_len together (single-segment mbufs only). */
void naam_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len);
uint16_t naam_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t naam_pktmbuf_tailroom(const struct rte_mbuf *m);
void naam_pktmbuf_reset(struct rte_mbuf *m);

char *naam_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *naam_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *naam_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int naam_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);

uint16_t naam_mbuf_refcnt_read(const struct rte_mbuf *m);
void naam_mbuf_refcnt_set(struct rte_mbuf *m, uint16_t value);

uint64_t naam_mbuf_ol_flags(const struct rte_mbuf *m);
/* Requests IPv4 header checksum offload: sets l2_len, l3_len and the TX offload flags. */
void naam_mbuf_set_tx_ipv4_cksum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len);

int naam_errno(void);
unsigned naam_lcore_id(void);

#endif
