#!/usr/bin/env bash
# The diode test bed: two network namespaces shaped like the two boxes either side of a
# hardware data diode, and a third one standing for a host on the IT (corporate) network.
#
#   gw-ot (OT box)                 diode (veth)                 gw-it (IT box)
#   ot0 198.18.0.1/24  ───────────────────────────────────►  it0 198.18.0.2/24
#     nothing accepted on ot0;                                  only link datagrams accepted on it0;
#     only UDP to 198.18.0.2:5600 leaves                        nothing leaves by it0
#                                                             itlan0 198.18.1.1/24 ◄─── x0 198.18.1.2/24  gw-x
#                                                                                          (IT-side host)
#
# - Addresses are in 198.18.0.0/15 (RFC 2544 benchmarking range) and exist only inside these
#   namespaces; no namespace has a default route, so nothing can leave them.
# - No ARP crosses the diode: ARP is off on both veth ends, IPv6 (and so neighbour discovery)
#   is off, and the one neighbour each side knows is a static, permanent entry.
# - The firewall rule sets are the ones deploy/nftables ships, with the interface and
#   addresses substituted.
# - An empty table `inet impair` in gw-it (prerouting, before everything) is where the test
#   harness puts link impairments: random loss and cuts.
#
# Usage: systest/netns.sh up|down|status. `up` tears down whatever was left first; `down`
# always succeeds and leaves nothing behind. Needs root, iproute2 and nftables.
set -euo pipefail

NS_OT=gw-ot
NS_IT=gw-it
NS_X=gw-x
OT_IF=ot0
IT_IF=it0
ITLAN_IF=itlan0
X_IF=x0
OT_MAC=02:00:c6:12:00:01
IT_MAC=02:00:c6:12:00:02
OT_ADDR=198.18.0.1
IT_ADDR=198.18.0.2
ITLAN_ADDR=198.18.1.1
X_ADDR=198.18.1.2
LINK_PORT=${DIODE_LINK_PORT:-5600}

here=$(cd "$(dirname "$0")" && pwd)
deploy="$here/../deploy"

down() {
    for ns in "$NS_X" "$NS_IT" "$NS_OT"; do
        if ip netns list 2>/dev/null | grep -qw "^$ns"; then
            # Any process still inside would keep the namespace alive: end those we find.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$pid" 2>/dev/null || true
            done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    # Deleting a namespace deletes its veth ends (and so their peers); nothing else remains.
    return 0
}

in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# Substitutes the defines of a shipped rule set and loads it into a namespace.
load_rules() {
    local ns=$1 file=$2
    shift 2
    local script
    script=$(cat "$file")
    local kv key value
    for kv in "$@"; do
        key=${kv%%=*}
        value=${kv#*=}
        if ! grep -q "^define $key = " <<<"$script"; then
            echo "netns.sh: $file has no 'define $key'" >&2
            return 1
        fi
        script=$(sed -e "s|^define $key = .*|define $key = $value|" <<<"$script")
    done
    in_ns "$ns" nft -f - <<<"$script"
}

quiet_if() {
    # No IPv6 on the interface (no neighbour discovery, no router solicitations), no ARP,
    # no multicast.
    local ns=$1 ifname=$2
    in_ns "$ns" sysctl -qw "net.ipv6.conf.$ifname.disable_ipv6=1" 2>/dev/null || true
    in_ns "$ns" ip link set dev "$ifname" arp off multicast off
}

up() {
    command -v nft >/dev/null || { echo "netns.sh: nft not found (apt-get install nftables)" >&2; exit 1; }
    down
    ip netns add "$NS_OT"
    ip netns add "$NS_IT"
    ip netns add "$NS_X"
    for ns in "$NS_OT" "$NS_IT" "$NS_X"; do
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
        in_ns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
        in_ns "$ns" ip link set lo up
    done

    # The diode.
    ip link add "$OT_IF" netns "$NS_OT" address "$OT_MAC" type veth \
        peer name "$IT_IF" netns "$NS_IT" address "$IT_MAC"
    quiet_if "$NS_OT" "$OT_IF"
    quiet_if "$NS_IT" "$IT_IF"
    # gateway-tx sends runs of datagrams as one UDP GSO buffer. A NIC (or the kernel, for a NIC
    # without UDP segmentation offload) cuts it into datagrams before the wire, but a veth
    # passes the whole buffer on as one packet, so its counters and the nft loss rules would
    # see one packet for many datagrams. Segmenting in the kernel, as for such a NIC, keeps
    # one packet per datagram on the diode, as on a fibre.
    in_ns "$NS_OT" ethtool -K "$OT_IF" tx-udp-segmentation off >/dev/null
    in_ns "$NS_OT" ip addr add "$OT_ADDR/24" dev "$OT_IF"
    in_ns "$NS_IT" ip addr add "$IT_ADDR/24" dev "$IT_IF"
    in_ns "$NS_OT" ip link set "$OT_IF" up
    in_ns "$NS_IT" ip link set "$IT_IF" up
    # Static neighbours, as on a real diode: the OT box is told the IT box's MAC (it could
    # never learn it: nothing comes back), and the IT box knows the OT box's for completeness.
    in_ns "$NS_OT" ip neigh replace "$IT_ADDR" lladdr "$IT_MAC" dev "$OT_IF" nud permanent
    in_ns "$NS_IT" ip neigh replace "$OT_ADDR" lladdr "$OT_MAC" dev "$IT_IF" nud permanent

    # The IT network: one other host.
    ip link add "$ITLAN_IF" netns "$NS_IT" type veth peer name "$X_IF" netns "$NS_X"
    quiet_if "$NS_IT" "$ITLAN_IF"
    quiet_if "$NS_X" "$X_IF"
    in_ns "$NS_IT" ip addr add "$ITLAN_ADDR/24" dev "$ITLAN_IF"
    in_ns "$NS_X" ip addr add "$X_ADDR/24" dev "$X_IF"
    in_ns "$NS_IT" ip link set "$ITLAN_IF" up
    in_ns "$NS_X" ip link set "$X_IF" up
    in_ns "$NS_IT" ip neigh replace "$X_ADDR" lladdr "$(in_ns "$NS_X" cat /sys/class/net/$X_IF/address)" dev "$ITLAN_IF" nud permanent
    in_ns "$NS_X" ip neigh replace "$ITLAN_ADDR" lladdr "$(in_ns "$NS_IT" cat /sys/class/net/$ITLAN_IF/address)" dev "$X_IF" nud permanent
    # The host reaches the IT box's diode address (where gateway-rx listens) through its LAN
    # address, as a host on the corporate network would.
    in_ns "$NS_X" ip route add "$IT_ADDR/32" via "$ITLAN_ADDR" dev "$X_IF"

    # Receive buffers and the rest of the shipped sysctl settings, where a namespace has them.
    if [ -f "$deploy/sysctl/90-gateway.conf" ]; then
        in_ns "$NS_IT" sysctl -q -e -p "$deploy/sysctl/90-gateway.conf" >/dev/null 2>&1 || true
    fi
    # Kernels that cap net.core.rmem_max below the shipped value refuse the shipped
    # rmem_default too; try the largest the namespace allows (some kernels keep it read-only
    # outside the initial namespace: gateway-rx and the test relay size their own buffers).
    local rmax
    rmax=$(in_ns "$NS_IT" sysctl -n net.core.rmem_max)
    in_ns "$NS_IT" sysctl -qw "net.core.rmem_default=$rmax" 2>/dev/null || true

    # Firewalls: the rule sets deploy/ ships.
    load_rules "$NS_OT" "$deploy/nftables/ot-box.nft" \
        "DIODE=\"$OT_IF\"" "RX_ADDR=$IT_ADDR" "LINK_PORT=$LINK_PORT"
    load_rules "$NS_IT" "$deploy/nftables/it-box.nft" \
        "DIODE=\"$IT_IF\"" "TX_ADDR=$OT_ADDR" "LINK_PORT=$LINK_PORT"
    # Where the harness puts impairments (loss, cuts): ahead of the box's own rules. Its rules
    # count what they drop in the named counter, which outlives flushing the chain.
    in_ns "$NS_IT" nft -f - <<NFT
table inet impair {
    counter dropped { }
    chain pre {
        type filter hook prerouting priority -300; policy accept;
    }
}
NFT
    status >/dev/null
}

status() {
    local ns
    for ns in "$NS_OT" "$NS_IT" "$NS_X"; do
        ip netns list | grep -qw "^$ns" || { echo "netns.sh: namespace $ns missing" >&2; return 1; }
    done
    in_ns "$NS_OT" ip -br addr show dev "$OT_IF"
    in_ns "$NS_IT" ip -br addr show dev "$IT_IF"
    in_ns "$NS_IT" ip -br addr show dev "$ITLAN_IF"
    in_ns "$NS_X" ip -br addr show dev "$X_IF"
    in_ns "$NS_OT" ip neigh show dev "$OT_IF"
    in_ns "$NS_OT" nft list table inet gateway_ot >/dev/null
    in_ns "$NS_IT" nft list table inet gateway_it >/dev/null
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
