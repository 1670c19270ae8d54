"""A labelled set of real recorded sounds, built from Debian packages.

No audio data set is reachable offline here, but Debian ships game and desktop sound effects with
descriptive names. ``fetch_real_sounds`` downloads three such packages, pulls the audio out in pure
Python (a .deb is an ``ar`` archive holding ``data.tar.*``; no dpkg needed), labels each clip from its
name with the table ``RULES`` below (first matching pattern wins; clips that match nothing are
dropped) and writes the project's generic eval layout::

    DEST/clips/<package>/<file>
    DEST/metadata.jsonl   {"file", "labels", "synonyms", "source", "original_name"}

``fetch_unlabelled_sounds`` writes the clips that match nothing to a second folder (manifest
``sources.jsonl``): real audio disjoint from the labelled set, for label-free measurements such as
the audio mean of the 'shift' bridge.

``fetch_sound_split("dev" | "test")`` builds the same layout (rows also carry ``"split"``) from a
split BY PACKAGE: dev = the three packages above (the clips the project was tuned on) + Hydrogen's
drum kits; test = ``TEST_PACKAGES``, packages never used before (Tux Paint stamps, Asterisk prompts,
speech-dispatcher's sound icons, small game packages). Choose every setting on dev; read test once.

Only the .deb downloads touch the network (``apt-get download``, else plain HTTP from
deb.debian.org with a pinned file name and sha256). The result is cached in ``$MATS_HOME/sounds``;
later calls return at once, offline.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..store import mats_home, publish_dir, sha256_file, unique_partial

__all__ = ["fetch_real_sounds", "fetch_sound_split", "fetch_unlabelled_sounds", "read_metadata", "RULES",
           "PACKAGES", "SPLITS", "DEV_PACKAGES", "TEST_PACKAGES", "SoundsError"]


class SoundsError(RuntimeError):
    pass


@dataclass(frozen=True)
class DebPackage:
    name: str
    filename: str  # path under the Debian mirror's root (pinned release, for the HTTP fallback)
    sha256: str  # checked on the HTTP path; apt-get verifies its own downloads


PACKAGES = {
    p.name: p
    for p in [
        DebPackage("sound-theme-freedesktop",
                   "pool/main/s/sound-theme-freedesktop/sound-theme-freedesktop_0.8-2_all.deb",
                   "135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea"),
        DebPackage("openttd-opensfx",
                   "pool/main/o/openttd-opensfx/openttd-opensfx_1.0.3-2_all.deb",
                   "2898b4677a3caccc4abc08fb4cf83319047b5a04729291deb5c77a8cd713c006"),
        DebPackage("wesnoth-1.16-data",
                   "pool/main/w/wesnoth-1.16/wesnoth-1.16-data_1.16.9-1_all.deb",
                   "1012b964bd412a6770685e3324ae3b61e176caff7846192d1ee63d55cd621e26"),
        # added for the dev/test splits (fetch_sound_split); sizes are the .deb download
        DebPackage("hydrogen-drumkits",  # 143 MB, dev
                   "pool/main/h/hydrogen-drumkits/hydrogen-drumkits_2017.09.19~dfsg-1_all.deb",
                   "6ea3c6df9a67762e2362f946c695e619859126b19fbccf32a2e8f07dfd03b2f4"),
        DebPackage("tuxpaint-stamps-default",  # 161 MB, test
                   "pool/main/t/tuxpaint-stamps/tuxpaint-stamps-default_2022.06.04-1_all.deb",
                   "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"),
        DebPackage("asterisk-core-sounds-en-wav",  # 18 MB, test
                   "pool/main/a/asterisk-core-sounds/asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
                   "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d"),
        DebPackage("sound-icons",  # 0.5 MB, test
                   "pool/main/s/sound-icons/sound-icons_0.1-8_all.deb",
                   "cbb7defa9cab0c86c9151e72c6c8a99a0ed21d244bc4c7cffdde7a0e4d9fa5b3"),
        DebPackage("heroes-sound-effects",  # 0.3 MB, test
                   "pool/main/h/heroes-sound-effects/heroes-sound-effects_1.0-6_all.deb",
                   "e0bf5e5077257b8acc475309906d9cf910c434d2ffa582f3e4c2157dd83c0909"),
        DebPackage("tuxtype-data",  # 10 MB, test
                   "pool/main/t/tuxtype/tuxtype-data_1.8.3-5.1_all.deb",
                   "62f85e2c6d6820efbaf1d914039b50c070bf5899b1d1d14aea00cebca14f4c78"),
        DebPackage("frozen-bubble-data",  # 22 MB, test
                   "pool/main/f/frozen-bubble/frozen-bubble-data_2.212-11_all.deb",
                   "39cdfd07d9532d1558762cf265a844d09015c4540568573c50f444cc084166e0"),
        DebPackage("bucklespring-data",  # 2.6 MB, test
                   "pool/main/b/bucklespring/bucklespring-data_1.4.0-2_all.deb",
                   "2add9f5583b3afc9c0b528066f4578baff930b74d4a94c8a25d103ef79a444e5"),
        DebPackage("tuxpaint-data",  # 7.9 MB, test
                   "pool/main/t/tuxpaint/tuxpaint-data_0.9.28-sdl2-1_all.deb",
                   "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5"),
    ]
}
MIRROR = "http://deb.debian.org/debian/"

# (package, regex on the lower-cased clip name, class, synonyms). Names are file paths for
# freedesktop/wesnoth and the quoted title in opensfx.cat. Only names that plainly say what
# makes the sound are kept; UI blips, fantasy creatures and mixed "toyland" effects are left out.
RULES: list[tuple[str, str, str, list[str]]] = [
    # freedesktop desktop sounds
    ("sound-theme-freedesktop", r"audio-channel-front-(left|right|center)", "speech",
     ["speech", "man speaking", "voice", "talking", "spoken words"]),
    ("sound-theme-freedesktop", r"^bell\b", "bell", ["bell", "ringing bell", "ding", "chime"]),
    ("sound-theme-freedesktop", r"camera-shutter|screen-capture", "camera shutter",
     ["camera shutter", "camera", "shutter click", "photo"]),
    ("sound-theme-freedesktop", r"phone-(incoming-call|outgoing-calling|outgoing-busy)", "telephone",
     ["telephone", "phone ringing", "ringtone", "telephone bell", "dial tone"]),
    ("sound-theme-freedesktop", r"alarm-clock", "alarm clock", ["alarm clock", "alarm", "beeping alarm"]),
    # OpenTTD OpenSFX (titles)
    ("openttd-opensfx", r"factory whistle", "whistle", ["whistle", "steam whistle", "factory whistle"]),
    ("openttd-opensfx", r"train station departure|steam engine going in tunnel", "train",
     ["train", "locomotive", "railway", "train horn", "steam train"]),
    ("openttd-opensfx", r"level crossing", "bell", ["bell", "ringing bell", "railroad crossing bell"]),
    ("openttd-opensfx", r"ship horn|ferry horn", "ship horn", ["ship horn", "foghorn", "boat horn", "ship"]),
    ("openttd-opensfx", r"^(toyland: )?(propeller plane|.*jet take off)", "airplane",
     ["airplane", "aircraft", "jet engine", "propeller plane", "plane taking off"]),
    ("openttd-opensfx", r"^helicopter", "helicopter", ["helicopter", "rotor", "chopper"]),
    ("openttd-opensfx", r"electric sparking", "electric sparks",
     ["electric sparks", "electricity", "buzzing", "arcing"]),
    ("openttd-opensfx", r"^steam \(of steam engine", "hiss", ["hiss", "hissing", "steam", "escaping steam"]),
    ("openttd-opensfx", r"^(big )?crash$", "crash", ["crash", "car crash", "smash", "collision"]),
    ("openttd-opensfx", r"^explosion$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("openttd-opensfx", r"cash till", "cash register", ["cash register", "cash till", "till", "coins"]),
    ("openttd-opensfx", r"^beep$", "beep", ["beep", "bleep", "electronic beep"]),
    ("openttd-opensfx", r"^morse$", "morse code", ["morse code", "telegraph", "beeping"]),
    ("openttd-opensfx", r"^(truck/old bus start|modern bus start|old bus start)", "engine",
     ["engine", "vehicle engine", "bus", "truck", "engine starting"]),
    ("openttd-opensfx", r"^applause$", "applause", ["applause", "clapping", "audience", "cheering"]),
    ("openttd-opensfx", r"^jackhammer$", "jackhammer", ["jackhammer", "pneumatic drill", "drilling"]),
    ("openttd-opensfx", r"modern car horn", "car horn", ["car horn", "honk", "vehicle horn", "horn"]),
    ("openttd-opensfx", r"^sheep$", "sheep", ["sheep", "bleat", "baa", "lamb"]),
    ("openttd-opensfx", r"^cow$", "cow", ["cow", "moo", "cattle", "moan"]),
    ("openttd-opensfx", r"^horse$", "horse", ["horse", "neigh", "whinny", "gallop"]),
    ("openttd-opensfx", r"lion roar", "lion", ["lion", "roar", "growl", "big cat"]),
    ("openttd-opensfx", r"monkeys", "monkey", ["monkey", "monkeys", "ape", "primate screech"]),
    ("openttd-opensfx", r"tropical: bird", "bird", ["bird", "bird song", "chirp", "tweet"]),
    ("openttd-opensfx", r"building bridge", "hammering", ["hammering", "hammer", "blacksmith", "metal clang"]),
    ("openttd-opensfx", r"^sawmill$", "saw", ["saw", "circular saw", "sawing", "power saw"]),
    ("openttd-opensfx", r"chainsaw", "chainsaw", ["chainsaw", "saw", "power tool"]),
    ("openttd-opensfx", r"(crashing|falling) tree", "falling tree",
     ["falling tree", "tree falling", "timber", "wood cracking"]),
    ("openttd-opensfx", r"bubble|plastic mine", "bubbles", ["bubbles", "bubbling", "gurgling", "water bubbles"]),
    ("openttd-opensfx", r"^(heavy )?wind$", "wind", ["wind", "howling wind", "gust", "storm"]),
    # Wesnoth (file paths under sounds/)
    ("wesnoth-1.16-data", r"ambient/birds\d", "bird", ["bird", "bird song", "chirp", "tweet"]),
    ("wesnoth-1.16-data", r"ambient/campfire|/fire\.wav$", "fire", ["fire", "crackling fire", "campfire", "flames"]),
    ("wesnoth-1.16-data", r"ambient/wardrums", "drums", ["drums", "drum", "drumming", "percussion"]),
    ("wesnoth-1.16-data", r"sounds/explosion\.ogg$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("wesnoth-1.16-data", r"/gunshot\.wav$|/thunderstick\.ogg$", "gunshot", ["gunshot", "gun", "shot", "firearm"]),
    ("wesnoth-1.16-data", r"horn-signals/horn-[123]\.ogg$", "horn", ["horn", "bugle", "brass horn", "trumpet"]),
    ("wesnoth-1.16-data", r"wolf-growl-\d", "growl", ["growl", "wolf", "dog growling", "snarl"]),
    ("wesnoth-1.16-data", r"horse-(elf-)?canter", "horse", ["horse", "gallop", "hooves", "clip-clop"]),
    ("wesnoth-1.16-data", r"/bell\.wav$", "bell", ["bell", "ringing bell", "ding", "chime"]),
    ("wesnoth-1.16-data", r"(witches|dwarf)-laugh", "laughter", ["laughter", "laugh", "laughing", "cackle"]),
    ("wesnoth-1.16-data", r"/lightning\.ogg$", "thunder", ["thunder", "thunderclap", "lightning", "storm"]),
    ("wesnoth-1.16-data", r"bat-flapping", "wings flapping", ["wings flapping", "flapping", "wings", "bat"]),
    ("wesnoth-1.16-data", r"/hiss(-big)?\.wav$", "hiss", ["hiss", "hissing", "snake", "hissing snake"]),
    ("wesnoth-1.16-data", r"/gold\.ogg$", "coins", ["coins", "jingling coins", "money", "clinking"]),
    ("wesnoth-1.16-data", r"/sword-1\.ogg$", "sword", ["sword", "sword clash", "metal clang", "blade"]),
    ("wesnoth-1.16-data", r"/(cross)?bow\.ogg$", "arrow", ["arrow", "bow and arrow", "crossbow", "bowstring"]),
    ("wesnoth-1.16-data", r"human-(female-)?die-[12]\.ogg$", "scream", ["scream", "cry", "yell", "groan"]),
    # -- packages added for fetch_sound_split (dev: hydrogen-drumkits; test: the rest). Written from
    # the names alone (file paths, or "<kit>: <instrument>" from each drumkit.xml for hydrogen).
    # Hydrogen drum kits: the instrument names of drumkit.xml (kit folder, a colon, the instrument)
    ("hydrogen-drumkits", r": .*cowbell", "cowbell", ["cowbell", "cow bell", "bell", "percussion"]),
    ("hydrogen-drumkits", r": .*(kick|bass ?drum)", "bass drum", ["bass drum", "kick drum", "kick", "drum"]),
    ("hydrogen-drumkits", r": .*snare", "snare drum", ["snare drum", "snare", "drum", "rimshot"]),
    ("hydrogen-drumkits", r": .*(hi[- ]?hat|\bhh\b|\bhat\b)", "hi-hat", ["hi-hat", "hihat", "cymbal", "closed hi-hat"]),
    ("hydrogen-drumkits", r": .*(crash|\bride|china|splash|cymbal)", "cymbal",
     ["cymbal", "crash cymbal", "ride cymbal", "cymbals"]),
    ("hydrogen-drumkits", r": .*\btom", "tom drum", ["tom drum", "tom-tom", "drum", "floor tom"]),
    ("hydrogen-drumkits", r": .*(hand ?clap|\bclap)", "hand clap", ["hand clap", "clapping", "clap", "applause"]),
    ("hydrogen-drumkits", r": .*tambourine", "tambourine", ["tambourine", "jingle", "shaker", "percussion"]),
    ("hydrogen-drumkits", r": .*maraca", "maraca", ["maraca", "maracas", "shaker", "rattle"]),
    ("hydrogen-drumkits", r": .*bongo", "bongo", ["bongo", "bongos", "hand drum", "drum"]),
    ("hydrogen-drumkits", r": .*conga", "conga", ["conga", "conga drum", "hand drum", "drum"]),
    ("hydrogen-drumkits", r": .*djembe", "djembe", ["djembe", "hand drum", "african drum", "drum"]),
    ("hydrogen-drumkits", r": .*(woodblock|wood block|clave)", "wood block",
     ["wood block", "woodblock", "clave", "percussion"]),
    ("hydrogen-drumkits", r": .*finger snap", "finger snapping", ["finger snapping", "snap", "finger snap", "click"]),
    # Tux Paint stamps (paths under stamps/); *_desc.ogg are spoken English descriptions of the stamp
    ("tuxpaint-stamps-default", r"_desc\.ogg$", "speech",
     ["speech", "voice", "talking", "spoken words", "narration"]),
    ("tuxpaint-stamps-default", r"/frog\.ogg$", "frog", ["frog", "croak", "ribbit", "toad"]),
    ("tuxpaint-stamps-default", r"birds/(duck|drake)\.ogg$", "duck", ["duck", "quack", "quacking", "ducks"]),
    ("tuxpaint-stamps-default", r"birds/gander\.ogg$", "goose", ["goose", "honk", "geese", "honking"]),
    ("tuxpaint-stamps-default", r"birds/hen\.ogg$", "chicken", ["chicken", "hen", "cluck", "clucking"]),
    ("tuxpaint-stamps-default", r"birds/rooster\.ogg$", "rooster",
     ["rooster", "crowing", "cock-a-doodle-doo", "cockerel"]),
    ("tuxpaint-stamps-default", r"birds/turkey\.ogg$", "turkey", ["turkey", "gobble", "gobbling", "turkey call"]),
    ("tuxpaint-stamps-default", r"birds/crow\.ogg$", "crow", ["crow", "caw", "cawing", "raven"]),
    ("tuxpaint-stamps-default", r"birds/owl\.ogg$", "owl", ["owl", "hoot", "hooting", "owl call"]),
    ("tuxpaint-stamps-default", r"birds/seagull\.ogg$", "seagull", ["seagull", "gull", "seabird", "squawk"]),
    ("tuxpaint-stamps-default", r"birds/(blackbird|lark|cuckoo|tucan|quetzal)\.ogg$", "bird",
     ["bird", "bird song", "chirp", "tweet"]),
    ("tuxpaint-stamps-default", r"insects/(bee|hornet)\.ogg$", "bee", ["bee", "buzzing", "wasp", "insect"]),
    ("tuxpaint-stamps-default", r"insects/mosquito\.ogg$", "mosquito", ["mosquito", "buzzing", "whine", "insect"]),
    ("tuxpaint-stamps-default", r"insects/grasshopper\.ogg$", "insect",
     ["insect", "grasshopper", "cricket", "chirping insect"]),
    ("tuxpaint-stamps-default", r"apes/chimp\.ogg$", "monkey", ["monkey", "chimpanzee", "ape", "primate screech"]),
    ("tuxpaint-stamps-default", r"aquatic/(whale|orca)\.ogg$", "whale", ["whale", "whale song", "whale call", "orca"]),
    ("tuxpaint-stamps-default", r"bears/bear\.ogg$", "growl", ["growl", "bear", "roar", "snarl"]),
    ("tuxpaint-stamps-default", r"bovines/(cow|cow_white|bull)\.ogg$", "cow", ["cow", "moo", "cattle", "moan"]),
    ("tuxpaint-stamps-default", r"bovines/(goat|mountaingoat)\.ogg$", "goat",
     ["goat", "bleat", "goat bleating", "baa"]),
    ("tuxpaint-stamps-default", r"bovines/(sheep|sheep_lamb|ram)\.ogg$", "sheep", ["sheep", "bleat", "baa", "lamb"]),
    ("tuxpaint-stamps-default", r"cats/lion\.ogg$", "lion", ["lion", "roar", "growl", "big cat"]),
    ("tuxpaint-stamps-default", r"cats/tiger\.ogg$", "tiger", ["tiger", "roar", "growl", "big cat"]),
    ("tuxpaint-stamps-default", r"dogs/dog\.ogg$", "dog", ["dog", "bark", "barking", "woof"]),
    ("tuxpaint-stamps-default", r"mammals/elephant\.ogg$", "elephant",
     ["elephant", "trumpeting", "elephant trumpeting", "elephant call"]),
    ("tuxpaint-stamps-default", r"equines/donkey\.ogg$", "donkey", ["donkey", "bray", "braying", "hee-haw"]),
    ("tuxpaint-stamps-default", r"equines/horse\.ogg$", "horse", ["horse", "neigh", "whinny", "gallop"]),
    ("tuxpaint-stamps-default", r"mammals/pig(_golden2?)?\.ogg$", "pig", ["pig", "oink", "grunt", "squeal"]),
    ("tuxpaint-stamps-default", r"rodents/mouse\.ogg$", "mouse", ["mouse", "squeak", "rodent", "mice"]),
    ("tuxpaint-stamps-default", r"halloween/blackcat\.ogg$", "cat", ["cat", "meow", "miaow", "kitten"]),
    ("tuxpaint-stamps-default", r"hobbies/camera_35mm\.ogg$", "camera shutter",
     ["camera shutter", "camera", "shutter click", "photo"]),
    ("tuxpaint-stamps-default", r"percussion/cymbal_crash\.ogg$", "cymbal",
     ["cymbal", "crash cymbal", "ride cymbal", "cymbals"]),
    ("tuxpaint-stamps-default", r"percussion/drum_tomtom_floor\.ogg$", "tom drum",
     ["tom drum", "tom-tom", "drum", "floor tom"]),
    ("tuxpaint-stamps-default", r"percussion/drumkit\.ogg$", "drum kit", ["drum kit", "drums", "drumming", "drum set"]),
    ("tuxpaint-stamps-default", r"string/cello\.ogg$", "cello",
     ["cello", "violoncello", "bowed strings", "string instrument"]),
    ("tuxpaint-stamps-default", r"string/violin\.ogg$", "violin",
     ["violin", "fiddle", "bowed strings", "string instrument"]),
    ("tuxpaint-stamps-default", r"wind/bassoon\.ogg$", "bassoon",
     ["bassoon", "woodwind", "reed instrument", "wind instrument"]),
    ("tuxpaint-stamps-default", r"household/washing-machine\.ogg$", "washing machine",
     ["washing machine", "washer", "spin cycle", "laundry machine"]),
    ("tuxpaint-stamps-default", r"arttools/scissors_small_(closed|open)\.ogg$", "scissors",
     ["scissors", "cutting", "snip", "shears"]),
    ("tuxpaint-stamps-default", r"dishes/glass\.ogg$", "glass", ["glass", "clink", "glass clinking", "chink"]),
    ("tuxpaint-stamps-default", r"household/kettle\.ogg$", "kettle",
     ["kettle", "boiling water", "kettle whistle", "steam"]),
    ("tuxpaint-stamps-default", r"household/rubberduck\.ogg$", "squeak",
     ["squeak", "squeaky toy", "rubber duck", "squeaking"]),
    ("tuxpaint-stamps-default", r"household/toilet\.ogg$", "toilet flush",
     ["toilet flush", "flushing", "toilet", "water flowing"]),
    ("tuxpaint-stamps-default", r"tools/hammer\.ogg$", "hammering",
     ["hammering", "hammer", "blacksmith", "metal clang"]),
    ("tuxpaint-stamps-default", r"tools/saw\.ogg$", "saw", ["saw", "sawing", "hand saw", "wood sawing"]),
    ("tuxpaint-stamps-default", r"household/vacuum_cleaner\.ogg$", "vacuum cleaner",
     ["vacuum cleaner", "hoover", "vacuum", "suction"]),
    ("tuxpaint-stamps-default", r"naturalforces/lightningbolt\.ogg$", "thunder",
     ["thunder", "thunderclap", "lightning", "storm"]),
    ("tuxpaint-stamps-default", r"newyears/fireworks\.ogg$", "fireworks",
     ["fireworks", "firecracker", "explosions", "bang"]),
    ("tuxpaint-stamps-default", r"emergency/firetruck\.ogg$", "siren",
     ["siren", "fire engine", "fire truck siren", "emergency siren"]),
    # speech-dispatcher's sound icons (Czech authors: "cembalo" = harpsichord, "xylofon" = xylophone)
    ("sound-icons", r"^canary", "bird", ["bird", "bird song", "chirp", "canary"]),
    ("sound-icons", r"^cembalo-\d+\.wav$", "harpsichord",
     ["harpsichord", "cembalo", "keyboard instrument", "plucked strings"]),
    ("sound-icons", r"^electric-piano-\d+\.wav$", "electric piano",
     ["electric piano", "piano", "rhodes", "electronic piano"]),
    ("sound-icons", r"^piano-\d+\.wav$", "piano", ["piano", "piano note", "grand piano", "piano keys"]),
    ("sound-icons", r"^guitar-\d+\.wav$", "guitar", ["guitar", "acoustic guitar", "strum", "plucked guitar"]),
    ("sound-icons", r"^percussion-\d+\.wav$", "percussion", ["percussion", "drum", "drums", "percussion instrument"]),
    ("sound-icons", r"^trumpet-\d+\.wav$", "trumpet", ["trumpet", "brass", "bugle", "brass instrument"]),
    ("sound-icons", r"^violoncello-\d+\.wav$", "cello", ["cello", "violoncello", "bowed strings", "string instrument"]),
    ("sound-icons", r"^xylofon\.wav$", "xylophone", ["xylophone", "marimba", "mallet percussion", "glockenspiel"]),
    # Asterisk's English prompts (one speaker, 8 kHz telephone speech); beeps and tones apart
    ("asterisk-core-sounds-en-wav", r"en_us_f_allison/beep(err)?\.wav$", "beep", ["beep", "bleep", "electronic beep"]),
    ("asterisk-core-sounds-en-wav", r"^en_us_f_allison/(?!silence/)(?![^/]*(beep|tone))[^/]+\.wav$", "speech",
     ["speech", "woman speaking", "voice", "talking", "spoken words"]),
    # Heroes (French names: "claxon" = horn, "foule" = crowd, "explo" = explosion)
    ("heroes-sound-effects", r"^claxon\.wav$", "car horn", ["car horn", "honk", "klaxon", "horn"]),
    ("heroes-sound-effects", r"^clock0\d\.wav$", "clock", ["clock", "tick-tock", "clock ticking", "ticking"]),
    ("heroes-sound-effects", r"^coins\.wav$", "coins", ["coins", "jingling coins", "money", "clinking"]),
    ("heroes-sound-effects", r"^explo0\d\.wav$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("heroes-sound-effects", r"^foule\d\.wav$", "crowd", ["crowd", "crowd noise", "audience", "cheering crowd"]),
    # Tux Typing
    ("tuxtype-data", r"^sounds/alarm\.wav$", "alarm", ["alarm", "alarm bell", "alarm clock", "alarm ringing"]),
    ("tuxtype-data", r"^sounds/cheer\.wav$", "cheering", ["cheering", "cheer", "crowd cheering", "hooray"]),
    ("tuxtype-data", r"^sounds/excuseme\.wav$", "speech", ["speech", "voice", "talking", "excuse me"]),
    ("tuxtype-data", r"^sounds/explosion\.wav$", "explosion", ["explosion", "blast", "boom", "bang"]),
    ("tuxtype-data", r"^sounds/harp\.wav$", "harp", ["harp", "harp glissando", "plucked strings", "harp strings"]),
    # Frozen Bubble
    ("frozen-bubble-data", r"^applause\.ogg$", "applause", ["applause", "clapping", "audience", "cheering"]),
    ("frozen-bubble-data", r"^snore\.ogg$", "snoring", ["snoring", "snore", "sleeping", "breathing"]),
    ("frozen-bubble-data", r"^typewriter\.ogg$", "typewriter",
     ["typewriter", "typing", "keys clacking", "typewriter keys"]),
    # bucklespring: every file is one key of an IBM Model M keyboard, pressed (-0) or released (-1)
    ("bucklespring-data", r"^wav/[0-9a-f]{2}-[01]\.wav$", "computer keyboard",
     ["computer keyboard", "typing", "keyboard clicks", "key press"]),
    # Tux Paint (its harp.wav is the same file as Tux Typing's, so it is left out here)
    ("tuxpaint-data", r"^sounds/giggle\.wav$", "laughter", ["laughter", "giggle", "laughing", "child laughing"]),
    ("tuxpaint-data", r"^sounds/typewriterbell\.wav$", "bell", ["bell", "typewriter bell", "ding", "chime"]),
]

_COMPLETE = ".complete"
DEFAULT_PACKAGES = ("sound-theme-freedesktop", "openttd-opensfx", "wesnoth-1.16-data")
_VERSION = "1"  # bump when RULES or the layout change, so caches rebuild
_SPLIT_VERSION = "1"  # the same for the fetch_sound_split folders (their own stamp, their own caches)

# The split is by package: no package, and so no recording session or sound designer, is in both.
# dev = the three packages the project was tuned on (fetch_real_sounds' 91 clips) + hydrogen's drums;
# test = packages the project never used before the split, and disjoint from fetch_unlabelled_sounds'.
# Every setting (prompts, thresholds, bridges, checkpoints) is chosen on dev; test is read once.
DEV_PACKAGES = DEFAULT_PACKAGES + ("hydrogen-drumkits",)
TEST_PACKAGES = ("tuxpaint-stamps-default", "asterisk-core-sounds-en-wav", "sound-icons",
                 "heroes-sound-effects", "tuxtype-data", "frozen-bubble-data", "bucklespring-data",
                 "tuxpaint-data")
SPLITS = {"dev": DEV_PACKAGES, "test": TEST_PACKAGES}

# No class may swamp a score: per package, at most CLASS_CAP clips of a class and SPEECH_CAP of
# speech, picked evenly spaced from the clips sorted by file name (deterministic; spreads the picks
# over kits / folders rather than taking the alphabetically first). fetch_real_sounds' three packages
# are exempt: their clip list is fixed (and none of their classes has more than 6 clips anyway).
CLASS_CAP = 8
SPEECH_CAP = 10
_UNCAPPED = DEFAULT_PACKAGES

# Where the clips of the added packages live: a regex on the path inside the .deb whose group 1 is
# the clip's name (original_name, matched by RULES); the file is stored as that name with "/" -> "_".
_LAYOUT = {
    "tuxpaint-stamps-default": r"/tuxpaint/stamps/(.+\.(?:ogg|wav))$",
    "asterisk-core-sounds-en-wav": r"/asterisk/sounds/(en_US_f_Allison/.+\.wav)$",
    "sound-icons": r"/sounds/sound-icons/([^/]+\.wav)$",
    "heroes-sound-effects": r"/heroes/sfx/([^/]+\.wav)$",
    "tuxtype-data": r"/tuxtype/(sounds/[^/]+\.(?:wav|ogg))$",
    "frozen-bubble-data": r"/frozen-bubble/snd/([^/]+\.ogg)$",
    "bucklespring-data": r"/buckle/(wav/[^/]+\.wav)$",
    "tuxpaint-data": r"/tuxpaint/(sounds/[^/]+\.wav)$",
}


def _label(package: str, name: str):
    low = name.lower()
    for pkg, pattern, label, synonyms in RULES:
        if pkg == package and re.search(pattern, low):
            return label, synonyms
    return None


# -- .deb handling ----------------------------------------------------------------------------------

def _download_deb(pkg: DebPackage, folder: Path) -> Path:
    """apt-get (uses the system's signed indexes) first, plain HTTP with a pinned sha256 second."""
    errors = []
    if shutil.which("apt-get"):
        proc = subprocess.run(["apt-get", "download", pkg.name], cwd=folder, capture_output=True, text=True)
        debs = sorted(folder.glob(f"{pkg.name}_*.deb"))
        if proc.returncode == 0 and debs:
            return debs[-1]
        errors.append(f"apt-get download {pkg.name}: {proc.stderr.strip()[-300:]}")
    url = MIRROR + pkg.filename
    out = folder / Path(pkg.filename).name
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(out, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        errors.append(f"{url}: {e}")
        raise SoundsError(f"could not download the Debian package {pkg.name}:\n  " + "\n  ".join(errors)) from None
    if pkg.sha256 and sha256_file(out) != pkg.sha256:
        raise SoundsError(f"{url}: sha256 mismatch (expected {pkg.sha256}); not the pinned release")
    return out


class _Slice(io.RawIOBase):
    """A read-only window [start, start+size) of a file, so tarfile can stream one ar member."""

    def __init__(self, f, start: int, size: int):
        self.f, self.left = f, size
        f.seek(start)

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        data = self.f.read(n)
        b[:len(data)] = data
        self.left -= len(data)
        return len(data)


def _iter_deb_files(deb: Path, wanted):
    """Yield (path, bytes) for data-tarball members whose path satisfies ``wanted``."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise SoundsError(f"{deb}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                raise SoundsError(f"{deb}: no data.tar member found")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            start = f.tell()
            if name.startswith("data.tar"):
                comp = {".xz": "xz", ".gz": "gz", ".bz2": "bz2", "": ""}.get(name[len("data.tar"):])
                if comp is None:
                    raise SoundsError(f"{deb}: {name} uses a compression Python cannot read")
                stream = io.BufferedReader(_Slice(f, start, size), 1 << 20)
                with tarfile.open(fileobj=stream, mode=f"r|{comp}") as tar:
                    for member in tar:
                        if member.isfile() and wanted(member.name):
                            yield member.name, tar.extractfile(member).read()
                return
            f.seek(start + size + (size & 1))  # members are 2-byte aligned


def _opensfx_entries(cat: bytes):
    """OpenTTD sound container: a table of (offset, size) uint32 pairs (top bit of the first offset
    flags the new format), each entry = length-prefixed title, then a complete RIFF WAV."""
    first = struct.unpack_from("<I", cat, 0)[0]
    count = (first & 0x7FFFFFFF) // 8
    for i in range(count):
        offset, size = struct.unpack_from("<II", cat, 8 * i)
        offset &= 0x7FFFFFFF
        name_len = cat[offset]
        raw_name = cat[offset + 1:offset + 1 + name_len].rstrip(b"\0").decode("utf-8", "replace")
        wav = cat[offset + 1 + name_len:offset + 1 + name_len + size]
        title = raw_name.split('"')[1] if raw_name.count('"') >= 2 else raw_name
        yield i, title, raw_name, wav


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:48]


def _clips_from_package(pkg: str, deb: Path):
    """Yield (relative file name, audio bytes, original name) for every clip in a package."""
    if pkg == "openttd-opensfx":
        for _, data in _iter_deb_files(deb, lambda p: p.endswith("opensfx.cat")):
            for i, title, _raw, wav in _opensfx_entries(data):
                yield f"{i:02d}-{_slug(title)}.wav", wav, title
    elif pkg == "sound-theme-freedesktop":
        for path, data in _iter_deb_files(deb, lambda p: "/stereo/" in p and p.endswith(".oga")):
            yield Path(path).name, data, Path(path).name
    elif pkg == "wesnoth-1.16-data":
        for path, data in _iter_deb_files(deb, lambda p: "/sounds/" in p and p.endswith((".ogg", ".wav"))):
            rel = path.split("/sounds/", 1)[1]
            yield rel.replace("/", "_"), data, "sounds/" + rel
    elif pkg == "hydrogen-drumkits":
        yield from _hydrogen_clips(deb)
    elif pkg in _LAYOUT:
        pattern = re.compile(_LAYOUT[pkg])
        for path, data in _iter_deb_files(deb, pattern.search):
            name = pattern.search(path).group(1)
            yield name.replace("/", "_"), data, name
    else:
        raise SoundsError(f"no clip layout for the package {pkg!r}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(elem, tag: str) -> str:
    for child in elem:
        if _local(child.tag) == tag:
            return (child.text or "").strip()
    return ""


def _drumkit_samples(xml: bytes):
    """(instrument index, instrument name, sample file) for each instrument of a Hydrogen drumkit.xml;
    of an instrument's velocity layers the loudest (highest ``max``; the first on ties) is taken."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    instruments = [e for e in root.iter() if _local(e.tag) == "instrument"]
    for i, inst in enumerate(instruments):
        layers = []
        for layer in (e for e in inst.iter() if _local(e.tag) == "layer"):
            try:
                top = float(_child_text(layer, "max") or 1)
            except ValueError:
                top = 0.0
            if _child_text(layer, "filename"):
                layers.append((-top, len(layers), _child_text(layer, "filename")))
        sample = min(layers)[2] if layers else _child_text(inst, "filename")  # old kits: no layers
        if sample:
            yield i, _child_text(inst, "name"), sample


def _hydrogen_clips(deb: Path):
    """Hydrogen kits: label from the instrument map in each kit's drumkit.xml (two passes over the
    package, since the tarball's order is arbitrary: the maps first, then the samples they name)."""
    picks: dict[str, tuple[str, str]] = {}
    for path, xml in _iter_deb_files(deb, lambda p: "/drumkits/" in p and p.endswith("/drumkit.xml")):
        kit_dir = path.rsplit("/", 1)[0]
        kit = kit_dir.rsplit("/", 1)[1]
        for i, instrument, sample in _drumkit_samples(xml):
            member = f"{kit_dir}/{sample}"
            if member not in picks:  # a sample two instruments share is kept once, for the first
                ext = Path(sample).suffix.lower()
                picks[member] = (f"{_slug(kit)}_{i:02d}-{_slug(instrument) or 'x'}{ext}", f"{kit}: {instrument}")
    for path, data in _iter_deb_files(deb, lambda p: p in picks):
        rel, original = picks[path]
        yield rel, data, original


def _spread(items: list, k: int) -> list:
    """k items evenly spaced over a list (all of it when it is no longer than k)."""
    n = len(items)
    return list(items) if n <= k else [items[(2 * j + 1) * n // (2 * k)] for j in range(k)]


def _cap(rows: list[dict]) -> list[dict]:
    """Apply CLASS_CAP / SPEECH_CAP to one package's labelled rows (the rows to keep, sorted)."""
    by_class: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["file"]):
        by_class.setdefault(r["labels"][0], []).append(r)
    kept = []
    for label, group in by_class.items():
        kept += _spread(group, SPEECH_CAP if label == "speech" else CLASS_CAP)
    return sorted(kept, key=lambda r: r["file"])


# -- public -----------------------------------------------------------------------------------------

def read_metadata(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    with open(folder / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fetch_sound_split(split: str, dest: str | Path | None = None) -> Path:
    """Build (once) and return the folder of one split of the labelled real-sound set.

    ``split`` is "dev" (the packages the project was tuned on, a superset of
    :func:`fetch_real_sounds`' 91 clips, plus hydrogen-drumkits) or "test" (``TEST_PACKAGES``,
    never used for any choice). Cached in ``$MATS_HOME/sounds-<split>``; same layout as
    :func:`fetch_real_sounds`, each metadata row also carrying ``"split"``."""
    if split not in SPLITS:
        raise SoundsError(f"unknown sound split {split!r}; choose one of: {', '.join(SPLITS)}")
    dest = Path(dest) if dest is not None else mats_home() / f"sounds-{split}"
    return _build_sound_folder(dest, SPLITS[split], labelled=True, split=split)


def fetch_real_sounds(dest: str | Path | None = None,
                      packages: tuple[str, ...] = DEFAULT_PACKAGES) -> Path:
    """Build (once) and return the folder of the labelled real-sound set."""
    dest = Path(dest) if dest is not None else mats_home() / "sounds"
    return _build_sound_folder(dest, packages, labelled=True)


def fetch_unlabelled_sounds(dest: str | Path | None = None,
                            packages: tuple[str, ...] = DEFAULT_PACKAGES) -> Path:
    """Build (once) and return a folder of the same packages' clips that RULES leave unlabelled.

    Disjoint from :func:`fetch_real_sounds` by construction, so real audio for label-free uses
    (the audio mean of `mats gap --unpaired`, i.e. the 'shift' bridge) never touches the evaluation
    clips. Its manifest is ``sources.jsonl`` (file, source, original_name), not ``metadata.jsonl``:
    there are no labels to pair with."""
    dest = Path(dest) if dest is not None else mats_home() / "sounds-unlabelled"
    return _build_sound_folder(dest, packages, labelled=False)


def _build_sound_folder(dest: Path, packages: tuple[str, ...], labelled: bool,
                        split: str | None = None) -> Path:
    if split is None:
        stamp = f"{_VERSION} {','.join(packages)}\n"
    else:
        stamp = f"{_SPLIT_VERSION} {split} {','.join(packages)}\n"
    if (dest / _COMPLETE).is_file() and (dest / _COMPLETE).read_text() == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = unique_partial(dest)  # concurrent builders (two test runs) each write their own
    try:
        staging.mkdir()
        rows = []
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix="debs-") as tmp:
            for pkg in packages:
                if pkg not in PACKAGES:
                    raise SoundsError(f"unknown sound package {pkg!r}; known: {', '.join(PACKAGES)}")
                deb = _download_deb(PACKAGES[pkg], Path(tmp))
                pkg_rows = []
                for rel, data, original in _clips_from_package(pkg, deb):
                    hit = _label(pkg, original)
                    if (hit is None) == labelled:
                        continue
                    out = staging / "clips" / pkg / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                    row = {"file": str(out.relative_to(staging))}
                    if hit is not None:
                        row.update(labels=[hit[0]], synonyms=hit[1])
                    pkg_rows.append({**row, "source": pkg, "original_name": original})
                deb.unlink()
                if labelled and pkg not in _UNCAPPED:
                    kept = _cap(pkg_rows)
                    keep = {r["file"] for r in kept}
                    for r in pkg_rows:
                        if r["file"] not in keep:
                            (staging / r["file"]).unlink()
                    pkg_rows = kept
                if split is not None:
                    pkg_rows = [{**r, "split": split} for r in pkg_rows]
                rows += pkg_rows
        rows.sort(key=lambda r: r["file"])
        with open(staging / ("metadata.jsonl" if labelled else "sources.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        (staging / _COMPLETE).write_text(stamp)
    except BaseException:
        # A failed download or an interrupted build leaves nothing half-built behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish_dir(staging, dest, lambda d: (d / _COMPLETE).is_file() and (d / _COMPLETE).read_text() == stamp)


def _print_counts(folder: Path) -> None:
    import collections

    meta = read_metadata(folder)
    classes = collections.Counter(r["labels"][0] for r in meta)
    packages = collections.Counter(r["source"] for r in meta)
    print(f"{folder}: {len(meta)} clips, {len(classes)} classes, {len(packages)} packages")
    for pkg, n in sorted(packages.items()):
        per = collections.Counter(r["labels"][0] for r in meta if r["source"] == pkg)
        print(f"  {n:3d}  {pkg} ({len(per)} classes)")
        for label, k in sorted(per.items()):
            print(f"         {k:3d}  {label}")
    print("classes:")
    for label, n in sorted(classes.items()):
        print(f"  {n:3d}  {label}")


if __name__ == "__main__":
    import sys

    # python -m mats.data.sounds dev|test  -> that split; python -m mats.data.sounds [DEST] -> the 91 clips
    arg = sys.argv[1] if len(sys.argv) > 1 else None
    _print_counts(fetch_sound_split(arg) if arg in SPLITS else fetch_real_sounds(Path(arg) if arg else None))
