# Sourced by tools/demo.sh and bench/*.sh: the CNI plugins leave shared iptables chains
# (CNI-FORWARD, CNI-ADMIN, CNI-HOSTPORT-*) and turn on net.ipv4.ip_forward. A script that
# brought them in takes them out again: host_net_save at its start, host_net_restore at its
# end (chains that existed before are left alone).
host_net_save() {
    HOST_NET_CHAINS=$( (iptables -t filter -S; iptables -t nat -S) 2>/dev/null | awk '$1 == "-N" {print $2}')
    HOST_NET_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
}
host_net_restore() {
    for t in filter nat; do
        new=$(iptables -t $t -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-/ {print $2}')
        for c in $new; do
            echo "$HOST_NET_CHAINS" | grep -qx -- "$c" && continue
            iptables -t $t -S | grep -- "-j $c\$" | grep -v -- "^-A $c " | sed 's/^-A /-D /' |
                while read -r rule; do eval "iptables -t $t $rule"; done
        done
        for c in $new; do echo "$HOST_NET_CHAINS" | grep -qx -- "$c" || iptables -t $t -F "$c"; done
        for c in $new; do echo "$HOST_NET_CHAINS" | grep -qx -- "$c" || iptables -t $t -X "$c"; done
    done
    [ -z "${HOST_NET_FORWARD:-}" ] || echo "$HOST_NET_FORWARD" > /proc/sys/net/ipv4/ip_forward
}
