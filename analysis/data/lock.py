"""The lock: the sha256 of every file the fetch extracts, by source and target path.

A file's entry is its sha256; a folder's (``"."`` for the source's whole folder) is the sha256 of
its ``sha256sum``-style listing (:func:`analysis.data.sources.tree_digest`). The fetch refuses
files that differ, and ``python -m analysis.data verify`` re-checks what is on disk. Alternatives
that ship the same file (exllamav2 and exllamav3) share its entry; alternatives that ship the
same data in another form (MMLU as Arrow folders or as one JSON-lines file) have one entry each.
A Debian package cannot be pinned (the archive keeps only its newest update), so its entry may
list every version's digest that was checked; a newer one stops the fetch until it is added here.
``python -m analysis.data lock`` recomputes this table after a pin moves.
"""

LOCK: dict[str, dict[str, str | tuple[str, ...]]] = {
    "cldr": {
        "en.dat": "894baebce3c3dcd9049e46342ba8a9617689954fdd82011e7ab5397351144196",
        "global.dat": "a389dc74e1eba5b601c3c7b417c8d07b9e41f199370d10cc2cc70c771771156e",
    },
    "debian_code": {
        "c": "a2b4b0f7c25734f34a81d983e3ddd3097eb46d491ac5b14ba07b19bfb686fbd5",
        "c/COPYRIGHT": "40c7e1f2118531f038ca22999bd976901254e1bc5cd1b0f0211bdd064c599987",
        # Debian's archive serves only the newest security update of a package: each version seen is
        # listed, newest first (perl-modules-5.36 5.36.0-7+deb12u4, then +deb12u3: Archive/Tar.pm differs)
        "perl": (
            "4273ecc9bcf8e79e2f03644c0da000e58777868841260ead76691d1f0cb43b35",
            "d132fe00ffb2bc67e94a73e6b4ea6a7dc6538e8211a9d0065a6b2557865a890b",
        ),
        "perl/COPYRIGHT": "b52f3ca17b45473cb0da6ec46748949101fcf0dda1fd5d8b306e6c97fd41af4d",
        "shell": "95d60406e6015a19631dc4e1dae4fef130bf69a49e664be5a8edbd3037f59819",
        "shell/COPYRIGHT": "b95a056f8b12c636dbff51551defde480e1c3d264a84671b12374f8b07e6c90d",
    },
    "films": {"movies.db": "1d9c6a02e488d0354b2309e16130c58820a91ac2ce417e814c5964f9579a65ac"},
    "geonames": {
        "cities15000.json": "24e87d89c775305650301618fa434d26e47e1b64ba5e27a5611e0f351908fd11",
        "continents.json": "2b1e66d15206a49e1faf8d0ebc68aba6395ea1376b98f638883b1647d51a7ac2",
        "countries.json": "41c01b0843461207e71ba7530434738a4e7a7c84efd72aba03f547f450ca1ba4",
    },
    "lambada": {"requests.jsonl.gz": "b99023d53ab470530dc5494befde5eac975b4200d669ce5399ff2b5b401c35ae"},
    "mmlu": {
        ".": "c49fcf63a86f5b3cda1917677fc5ab8e0e98cef927e8f86470fc8227f2e0dc73",
        "mmlu.jsonl": "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
    },
    "rotten_tomatoes": {"rotten_tomatoes.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
    "sst2": {"validation": "c1e397b2e7d3309ec8b5ba95fe5d7c97fd0c3c9a07e230fb2a13a836b20c653b"},
    "tickers": {"indices_data.py": "3860cc394d157bbacb383b195c48dc9c9fc90770d004b96831931402b01b341a"},
    "wiki_articles": {"wiki.utf8": "d53fe0aeadf3355eb5d32b48bf8691575244c31caccae88ed46be8e1b40209c7"},
    "wiki_dump": {"enwiki-shortened.xml.bz2": "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"},
    "wiki_summaries": {
        "summaries_en-us.json": "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
        "summaries_es-es.json": "1657dd6aff552394924ad4910b3c7104432f35a76b4cc1864b26301fa6a25b5d",
        "summaries_fr-fr.json": "b0b2b6bbe6e35829d73495a849b915fb36e2e18a474cf58c544a2982f82a1bc4",
    },
    "wordnet": {
        "copyright": "f461bac9a5a1810c4fe1e3cec0a980f79406e3a8c1c147f3874979fb00e2cc0e",
        "data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
    },
}
