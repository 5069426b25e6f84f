"""Known answers from rust-fil-proofs and SPEC.md (§5, §6, §11) and published CommD constants."""

from __future__ import annotations

# (replica_id, porep_id, nodes, layers, api_version, last label): the upstream label tests.
LAST_LABELS = [
    (
        bytes([9] * 32),
        bytes(32),
        64,
        11,
        "1.0.0",
        "04ba0f9a6ba9fad35e4806d183a281eab3c25afa9a1bd5e3378da6f1f4f46204",
    ),
    (
        bytes([9] * 32),
        bytes([123] * 32),
        64,
        11,
        "1.1.0",
        "cfef0db78bf3b3ab9f1169774d2e7a77bc9054499d954834b51ca7c788110206",
    ),
]

# SPEC §5/§6 worked example: StackedDrg2KiBV1_1, node 3.
EXAMPLE_POREP_ID = bytes([5]) + bytes(31)
EXAMPLE_DRG_SEED = "3be68542ec229705b99be29c2106b0e4222ccd1d0311398ea4d22d7d"
EXAMPLE_FIRST_DRAWS = (0xB83F530F932CD3E2, 0x87B0F498FD8A88FE)
EXAMPLE_FEISTEL_KEYS = (
    0x90B15B1C4509E47A,
    0xDC5378C03DF3F21B,
    0xFA76FC24DEB9D7AC,
    0xCDEC5E11F7B30A54,
)
EXAMPLE_NODE3_PARENTS = (2, 1, 1, 2, 2, 2, 10, 46, 59, 7, 43, 29, 9, 16)

# rust-fil-proofs parent_cache.json: (sector size, api version) -> (file stem, SHA-256).
PUBLISHED_CACHES = {
    (2 << 10, "1.0.0"): (
        "v28-sdr-parent-3f0eef38bb48af1f48ad65e14eb85b4ebfc167cec18cd81764f6d998836c9899",
        "3da49221e2ed55371b86d0bf3d6526fcf128af61bed904f966428db1b531750d",
    ),
    (2 << 10, "1.1.0"): (
        "v28-sdr-parent-494d91dc80f2df5272c4b9e129bc7ade9405225993af9fe34e6542a39a47554b",
        "840057702eea7652cf97e04306c30fe57174714d90de156a25eddd6075c25b97",
    ),
    (8 << 20, "1.0.0"): (
        "v28-sdr-parent-dcdabb0fbe4364bf0ac28b6a18c66de246409fa1a9020a00f33fb3e3053da6dc",
        "a76604f2f59f2744c7151653bbb1d8596b6b57d295e6fa6c1f0c41d725b502ce",
    ),
    (8 << 20, "1.1.0"): (
        "v28-sdr-parent-5eed212119fd91aa6220a27f31a8966444a9381842bceb3a1ea61525bd47a5b5",
        "03cd13565ded97c240a5f52e54295ad127bd0461b57904cb3a4d79b097bbecab",
    ),
    (512 << 20, "1.0.0"): (
        "v28-sdr-parent-2aa9c77c3e58259481351cc4be2079cc71e1c9af39700866545c043bfa30fb42",
        "3adcc092423aa76d6a7184016893406da44dd974b219a89cd3ece25e4e3018f5",
    ),
    (512 << 20, "1.1.0"): (
        "v28-sdr-parent-7ba215a1d2345774ab90b8cb1158d296e409d6068819d7b8c7baf0b25d63dc34",
        "b5877d1963793efebc261fd8fde4dd6bc59e6b5c7abf52617a4ee023b8dc173a",
    ),
    (32 << 30, "1.0.0"): (
        "v28-sdr-parent-e1fa5d5b811ddbd118be3412c4a8c329156b8b8acc72632bca459455b5a05a13",
        "3c4f9841fcc75aed8c695800e58d08480629f25af3a2aefd81904181d75cc0b6",
    ),
    (32 << 30, "1.1.0"): (
        "v28-sdr-parent-21981246c370f9d76c7a77ab273d94bde0ceb4e938292334960bce05585dc117",
        "93deeac5e3052b6927467d4b2641bb782f05491de18d510147c93eeedd8672da",
    ),
    (64 << 30, "1.0.0"): (
        "v28-sdr-parent-8a99e8d6b6be7ab87a56b632e6739ff201c23ea14e99737c74690f0e265574d6",
        "2778a732ad46a7dc18e0564dfdf59fd321dcde74ab476fd6d3c4e6735d7cd89c",
    ),
    (64 << 30, "1.1.0"): (
        "v28-sdr-parent-4905486b7af19558ac3649bc6261411858b6add534438878c4ee3b29d8b9de0b",
        "2698b74eb2606b55b98d8b095e18b6320b47f46e00075956d48640ccd1641b03",
    ),
}

# CommD of all-zero sectors (go-commp-utils zerocomm; Curio's sectors_cc_values CIDs).
ZERO_COMMD = {
    2 << 10: "fc7e928296e516faade986b28f92d44a4f24b935485223376a799027bc18f833",
    8 << 20: "65f29e5d98d246c38b388cfc06db1f6b021303c5a289000bdce832a9c3ec421c",
    512 << 20: "39560e7b13a93b07a243fd2720ffa7cb3e1d2e505ab3629e79f46313512cda06",
    32 << 30: "077e5fde35c50a9303a55009e3498a4ebedff39c42b710b730d8ec7ac7afa63e",
    64 << 30: "e64005a6bfe3777953b8ad6ef93f0fca1049b2041654f2a411f7702799cece02",
}
