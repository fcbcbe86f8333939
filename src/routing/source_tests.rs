use super::*;

/// Members named `a`, `b`, … with these weights, at 192.0.2.1, .2, …
/// (IPv4) or 2001:db8::1, ::2, … (IPv6, for a name in upper case).
fn picker_of(members: &[(char, u32)]) -> SourcePicker {
    let members = members
        .iter()
        .map(|&(name, weight)| PoolMember {
            ip: ip_of(name),
            weight,
            helo_name: Some(format!("{name}.out.example")),
        })
        .collect();
    SourcePicker::new(members)
}

/// Members by name and weight.
type Members<'a> = &'a [(char, u32)];

fn ip_of(name: char) -> IpAddr {
    let n = name.to_ascii_lowercase() as u8 - b'a' + 1;
    if name.is_ascii_uppercase() {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            n.into(),
        ))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n))
    }
}

fn name_of(member: &PoolMember) -> char {
    let helo = member.helo_name.as_deref().expect("named");
    helo.chars().next().expect("a name")
}

fn picks(picker: &mut SourcePicker, n: usize) -> String {
    (0..n).map(|_| picker.pick().map_or('-', name_of)).collect()
}

#[test]
fn spreads_connections_as_nginx_does() {
    let table: &[(Members, usize, &str)] = &[
        (&[('a', 1)], 4, "aaaa"),
        (&[('a', 1), ('b', 1)], 6, "ababab"),
        (&[('a', 3), ('b', 1)], 8, "aabaaaba"),
        // nginx's own example (ngx_http_upstream_round_robin.c).
        (&[('a', 5), ('b', 1), ('c', 1)], 7, "aabacaa"),
        (&[('a', 5), ('b', 1), ('c', 1)], 14, "aabacaaaabacaa"),
        (&[('a', 1), ('b', 2)], 6, "babbab"),
        (&[('a', 2), ('b', 2), ('c', 1)], 5, "abcab"),
        // Weight 0: drained, never picked.
        (&[('a', 0), ('b', 1)], 3, "bbb"),
        (&[('a', 2), ('b', 0), ('c', 1)], 6, "acaaca"),
    ];
    for (members, n, want) in table {
        let mut picker = picker_of(members);
        assert_eq!(picks(&mut picker, *n), *want, "{members:?}");
    }
}

#[test]
fn each_member_gets_its_share_of_every_round() {
    let table: &[&[(char, u32)]] = &[
        &[('a', 3), ('b', 1)],
        &[('a', 5), ('b', 1), ('c', 1)],
        &[('a', 7), ('b', 3), ('c', 2), ('d', 0), ('e', 1)],
        &[('a', 1), ('b', 100)],
    ];
    for members in table {
        let mut picker = picker_of(members);
        let total: u32 = members.iter().map(|m| m.1).sum();
        let heaviest = members.iter().map(|m| m.1).max().unwrap_or(0);
        let sequence = picks(&mut picker, 3 * total as usize);
        for (name, weight) in *members {
            let got = sequence.chars().filter(|c| c == name).count();
            assert_eq!(
                got,
                3 * *weight as usize,
                "{name} in {sequence} of {members:?}"
            );
            // Smooth: no member more than its share in a row, and the
            // lightest ones are never picked twice in a row.
            let run = (0..=*weight + 1)
                .map(|n| name.to_string().repeat(n as usize))
                .take_while(|run| sequence.contains(run.as_str()))
                .count()
                .saturating_sub(1);
            let longest = if *weight == heaviest { *weight } else { 1 };
            assert!(run as u32 <= longest, "{name} {run} in a row: {sequence}");
        }
    }
}

#[test]
fn picks_within_a_family() {
    // a, b: IPv4; C, D: IPv6.
    let members = [('a', 3), ('C', 1), ('b', 1), ('D', 2)];
    let mut picker = picker_of(&members);
    let mut v4 = String::new();
    let mut v6 = String::new();
    for i in 0..12 {
        // Interleaved: each family's spread is its own.
        let (family, into) = if i % 3 == 0 {
            (Family::Ipv6, &mut v6)
        } else {
            (Family::Ipv4, &mut v4)
        };
        let member = picker.pick_for(family).expect("the pool serves both");
        assert_eq!(Family::of(&member.ip), family, "{member:?}");
        into.push(name_of(member));
    }
    assert_eq!(v4, "aabaaaba");
    assert_eq!(v6, "DCDD");

    let mut only_v4 = picker_of(&[('a', 1), ('B', 0)]);
    assert_eq!(
        only_v4.pick_for(Family::Ipv6),
        None,
        "weight 0 serves nothing"
    );
    assert!(!only_v4.serves(Family::Ipv6));
    assert!(only_v4.serves(Family::Ipv4));
    assert_eq!(only_v4.pick_for(Family::Ipv4).map(name_of), Some('a'));
}

#[test]
fn a_pool_of_one_always_gives_it() {
    let mut picker = picker_of(&[('a', 7)]);
    for family in [Family::Ipv4, Family::Ipv4, Family::Ipv4] {
        assert_eq!(picker.pick_for(family).map(|m| m.ip), Some(ip_of('a')));
    }
    assert_eq!(picker.pick_for(Family::Ipv6), None);
    assert_eq!(picks(&mut picker, 3), "aaa");
}

#[test]
fn a_pool_with_nothing_to_pick_says_so() {
    let table: &[Members] = &[&[], &[('a', 0)], &[('a', 0), ('B', 0)]];
    for members in table {
        let mut picker = picker_of(members);
        assert_eq!(picks(&mut picker, 2), "--", "{members:?}");
        for family in [Family::Ipv4, Family::Ipv6] {
            assert_eq!(picker.pick_for(family), None, "{members:?}");
            assert!(!picker.serves(family), "{members:?}");
        }
    }
}
