"""Fuzzy matching of canonical records: features, blocking, pair scoring and classification.

The exact stage (:mod:`synchub.match`) joins records that share an identity key.  This module
decides about everything else: is *Bob Mueller, Hauptstr. 5* the same customer as *Robert
Müller, Hauptstraße 5*?  It is pure Python (plus rapidfuzz for string distances), has no
database access and keeps no global state besides import-time tables and bounded caches.

Pipeline
--------
1. :func:`features` turns a canonical record (the JSON dict of a
   :class:`~synchub.schema.Person` or :class:`~synchub.schema.Company`) into a
   :class:`Features` object holding every comparison value precomputed: folded names, nickname
   groups, phonetic codes, birth date digits, folded street, postcode, e-mail and phone sets.
   Compute it once per record and reuse it for every comparison.
2. :func:`blocking_keys` gives several short ``(key_type, value)`` keys per record.  Only records
   sharing at least one key are compared.  The keys are chosen so that a true duplicate with a
   typo in any *single* field still shares a key (see the function's docstring).
3. :func:`score` compares two feature sets field by field.  Each field comparison yields an
   *agreement level* (``exact``, ``typo``, ``nickname``, ``different``, ...) and every level
   has a weight in **bits**: ``log2(m / u)``, where ``m`` is the probability of that level for
   two records of the same customer and ``u`` for two different customers (Fellegi–Sunter).
   The weights of all fields are added; a field missing on either side contributes 0.
4. :func:`classify` applies thresholds (``match`` at ``upper`` bits and above, ``possible``
   from ``lower``) and the **hard rules**, which override any score because a wrong merge mixes
   two people's data and consent:

   * persons: a clearly different first name (not a nickname, initial or typo variant; not
     explained by swapped first/last names) makes the pair ``distinct``; so does a different
     birth date unless the difference is a plausible typo (one digit, two adjacent digits
     transposed, day and month swapped).  Members of one household share surname, address
     and landline; twins also share the birth date; father and son may share the full name.
   * companies: clearly different names (not a typo, not one name contained in the other)
     or different VAT ids make the pair ``distinct`` unless the VAT ids agree.

:func:`dedupe`, :func:`link` and :func:`cluster` run the whole pipeline in memory.

Score scale
-----------
:attr:`Score.value` is the summed weight in bits (a log2 likelihood ratio).  ``+10`` means the
observed agreement pattern is about 1000 times more likely for the same customer than for two
different ones.  :attr:`Score.probability` maps it to 0..1 assuming even prior odds; the
thresholds of :class:`ScoreConfig` are in bits.
"""

from __future__ import annotations

import datetime as _dt
import gc
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from rapidfuzz.distance import OSA, JaroWinkler

from synchub.normalize import (
    NormalizationError,
    english_phonetic,
    fold,
    fold_company,
    fold_street,
    koelner_phonetik,
    phone_type,
    split_street,
)

__all__ = [
    "BULK_BLOCK",
    "CLASH_REASON",
    "MAX_BLOCK",
    "Counter",
    "Decision",
    "Features",
    "Score",
    "ScoreConfig",
    "blocking_keys",
    "classify",
    "cluster",
    "dedupe",
    "features",
    "gc_paused",
    "link",
    "score",
    "vetoed",
]

#: Largest block a database-backed caller keeps: a key shared by more golden records (a common
#: surname in a big city, a block of flats) is a stop key, neither stored nor looked up.
#: In-memory bulk runs use the finer :data:`BULK_BLOCK`.
MAX_BLOCK = 50

#: Largest block :func:`dedupe` and :func:`link` compare in full.  A bigger one is split by
#: the secondary key first, so a block of common first name + birth year (hundreds of
#: pairs, nearly all different people) costs a window per record instead of all its pairs.
#: On FEBRL no true pair is lost by it; on 105,000 synthetic customers it halves the pairs.
BULK_BLOCK = 12

#: Window of the sorted-neighbourhood fallback inside over-large blocks.
SN_WINDOW = 10

_JW = JaroWinkler.normalized_similarity
_OSA = OSA.distance

# Jaro–Winkler thresholds for names: at or above TYPO a difference is treated as a spelling
# error, at or above SIMILAR as "maybe a spelling error" (no evidence either way), below it
# the names are different.
_JW_TYPO = 0.9
_JW_SIMILAR = 0.8
_JW_STREET = 0.88

# ---------------------------------------------------------------------------------------------
# nickname and short-form table
# ---------------------------------------------------------------------------------------------

# Each line is one group of interchangeable forms of one given name.  A name may appear in
# several groups (``chris``, ``alex``): two names are compatible when they share a group, so
# ``Alexander ~ Alex ~ Alexandra`` but not ``Alexander ~ Alexandra``.  Spelling variants that
# fold() already unifies (Jürgen/Juergen/Jurgen) need no entry.  Kept deliberately tight:
# every pair in a group disables the household first-name rule for that pair, so short forms
# that are common names of their own in German-speaking countries (Lisa, Lena, Anja, Sandra,
# Liam, Leo, Hanna, Greta, Christa) are left out: Elisabeth and Lisa are more often mother and
# daughter than one person.
_NICKNAME_GROUPS = """
robert rob robbie bob bobby bert bertie
albert al bert bertie
william bill billy will willy
wilhelm willi willy wim
elisabeth elizabeth elsbeth liz lizzy liesel lies beth betty
katharina katharine katherine catherine catharina kathrin katrin kathy kati katie kate kat kathe
johannes johann hans hannes jo john
johanna hanne jo
margarete margarethe margaret margret grete gretel maggie meg
alexander alex sascha
alexandra alex sascha
friedrich frederick frederic fritz fred freddy freddie frieder
alfred fred freddy alf
josef joseph sepp seppi joe jupp
wolfgang wolf wolfi
christian chris
christoph christopher chris
christina christine kristina tina chris stine
andreas andi andy andrew
andrea andi andy
matthias mathias matthaus matze matthew matt
michael micha michi mike mick mikey
michaela micha michi
stefan stephan steffen stephen steven steve
stefanie stephanie steffi
thomas tom tommy thommy
susanne susanna susan susi suse sanne sue
barbara babs barbel
franziska franzi fanny
franz franziskus francis
maximilian max maxi
benjamin ben benny benni
nikolaus nicolaus klaus claus
nicholas nikolas nicolas nick nicky
peter pete
richard rick ricky rich richie dick
james jim jimmy jamie
anne anna ann anni annie
edward ed eddie ted teddy ned
charles charlie chuck
daniel dan danny dani
daniela dani
david dave davy
jonathan jon jonny
nathan nate
patrick pat paddy
patricia pat patty trish
samuel sam sammy
samantha sam sammy
timothy tim timmy
anthony antony tony
antonia toni
anton toni
jennifer jen jenny
jessica jess jessie
rebecca rebekka becky becca
victoria viktoria vicky tori
deborah debbie deb
dorothea dorothy doro thea dora dot
theodor theodore theo
gregory greg
gregor greg
jacob jakob jake
joshua josh
kenneth ken kenny
lawrence laurence larry
leonard leonhard len lenny
ronald ron ronny
donald don donnie
douglas doug
gerald gerry
henry harry hank
harold harry
heinrich heinz hinrich
walter walt
sebastian basti seb
tobias tobi
florian flo
ulrich ulli uli
ulrike ulli uli rike
bernhard bernd
gerhard gerd
hannelore hanne lore
magdalena magda
helene helena
gabriele gabriela gabi gaby
cornelia conny
konrad conny
ferdinand ferdi
veronika veronica vroni
rosemarie rosi
ludwig lutz
georg george jorg schorsch
manfred manni
siegfried siggi
sigrid siggi
rudolf rudi
isabella isabel bella isa
eleonore lore
"""


def _build_nicknames() -> dict[str, frozenset[int]]:
    groups: dict[str, set[int]] = {}
    for gid, line in enumerate(ln for ln in _NICKNAME_GROUPS.splitlines() if ln.strip()):
        for name in line.split():
            groups.setdefault(fold(name), set()).add(gid)
    return {name: frozenset(ids) for name, ids in groups.items()}


_NICKNAMES = _build_nicknames()

# Male/female pairs of one stem that Jaro–Winkler considers near-identical (Daniel/Daniela,
# Christian/Christina).  In one household they are two people, never a typo.
_GENDER_PAIRS = frozenset(
    frozenset((fold(a), fold(b)))
    for a, b in (
        ("peter", "petra"),
        ("christian", "christina"),
        ("christian", "christine"),
        ("alexander", "alexandra"),
        ("franz", "franziska"),
        ("julian", "julia"),
        ("jens", "jana"),
        ("carsten", "carina"),
        ("bernd", "berit"),
        ("ernst", "erna"),
    )
)
_FEMALE_ENDINGS = ("a", "e", "ina", "ine", "ie", "ia")
# Last letters of the male forms above; a stem ending otherwise ("Rebecc") is a typo.
_MALE_FINAL = frozenset("dklmnrst")


def _gender_variant(x: str, y: str) -> bool:
    """True for ``Daniel/Daniela``-style pairs: the same stem with a male and a female ending."""
    if len(x) > len(y):
        x, y = y, x
    if len(x) >= 3 and x[-1] in _MALE_FINAL and y.startswith(x) and y[len(x) :] in _FEMALE_ENDINGS:
        return True
    # Andreas/Andrea, Marcus/Marca; Mario/Maria, Antonio/Antonia (same length).
    if len(y) == len(x) + 1 and y.endswith("s") and y[:-1] == x and x.endswith("a"):
        return True
    if len(x) == len(y) and len(x) >= 4 and x[:-1] == y[:-1] and {x[-1], y[-1]} == {"a", "o"}:
        return True
    return frozenset((x, y)) in _GENDER_PAIRS


# ---------------------------------------------------------------------------------------------
# small value tables
# ---------------------------------------------------------------------------------------------

_MALE_SALUTATIONS = frozenset(
    {"herr", "hr", "mr", "mister", "monsieur", "m", "signor", "sig", "sr", "senor", "dhr"}
)
_FEMALE_SALUTATIONS = frozenset(
    {"frau", "fr", "mrs", "ms", "miss", "madame", "mme", "mlle", "signora", "sra", "senora", "mevr"}
)

# Local parts that say nothing about a person (role accounts).
_GENERIC_LOCALS = frozenset(
    {
        "info", "kontakt", "contact", "office", "buro", "mail", "email", "post", "service",
        "support", "hello", "hallo", "team", "admin", "sales", "vertrieb", "verwaltung",
        "noreply", "norply", "newsletter", "shop", "order", "bestellung", "rechnung",
        "invoice", "billing", "buchhaltung", "empfang", "zentrale", "mail1", "test",
    }
)  # fmt: skip

# Mailbox providers: their domain says nothing about a company.
_FREEMAIL = frozenset(
    {
        "gmail.com", "googlemail.com", "gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com",
        "web.de", "t-online.de", "freenet.de", "posteo.de", "mailbox.org", "arcor.de",
        "online.de", "email.de", "mail.de", "vodafone.de", "kabelmail.de", "aol.com", "aol.de",
        "icloud.com", "me.com", "mac.com", "yahoo.com", "yahoo.de", "ymail.com",
        "hotmail.com", "hotmail.de", "outlook.com", "outlook.de", "live.com", "live.de",
        "msn.com", "protonmail.com", "proton.me", "bluewin.ch", "hispeed.ch", "sunrise.ch",
        "aon.at", "chello.at", "a1.net", "tutanota.com", "tuta.io", "zoho.com",
    }
)  # fmt: skip

_STREET_SUFFIX = (("street", "st"), ("strasse", "str"), ("road", "rd"), ("avenu", "ave"))
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")
_LOCAL_SEP = re.compile(r"[._\-]+")


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Features:
    """Precomputed comparison values of one canonical record.

    All strings are comparison keys (folded: lower-case ASCII, umlauts and ``ae/oe/ue``
    unified, see :func:`synchub.normalize.fold`), never display values.  Empty string or
    empty set means *missing*.
    """

    kind: str = "person"
    # --- names (persons) -------------------------------------------------------------------
    first: str = ""  #: folded given name(s): ``"hans peter"``
    first_compact: str = ""  #: without spaces: ``"hanspeter"``
    first_tokens: tuple[str, ...] = ()
    first_is_initial: bool = False  #: only initials were given (``"R."``, ``"R. J."``)
    first_groups: frozenset[int] = frozenset()  #: nickname groups of any of the tokens
    first_kp: str = ""  #: Kölner Phonetik of the given name
    last: str = ""
    last_compact: str = ""
    last_tokens: tuple[str, ...] = ()
    last_kp: str = ""
    gender: str = ""  #: ``'m'``/``'f'`` from the salutation, ``''`` when unknown
    # --- birth date --------------------------------------------------------------------------
    birth: str = ""  #: ``YYYYMMDD`` of a valid date
    birth_year: str = ""
    # --- address -----------------------------------------------------------------------------
    street: str = ""  #: folded street name without house number
    street_compact: str = ""
    house_number: str = ""
    line2: str = ""
    line2_key: str = ""  #: line 2 folded like a street, compact
    postcode: str = ""
    city: str = ""
    region: str = ""
    country: str = ""
    # --- contact -----------------------------------------------------------------------------
    emails: frozenset[str] = frozenset()
    #: local parts without ``.-_`` and ``+tag``; role accounts left out
    email_locals: frozenset[str] = frozenset()
    email_domains: frozenset[str] = frozenset()  #: non-freemail domains
    phones: frozenset[str] = frozenset()
    mobiles: frozenset[str] = frozenset()
    landlines: frozenset[str] = frozenset()
    # --- organisation ------------------------------------------------------------------------
    #: folded name without legal form (companies: ``name``; persons: ``company_name``)
    company: str = ""
    company_compact: str = ""
    company_tokens: frozenset[str] = frozenset()
    domain: str = ""  #: companies: ``domain`` (without ``www.``)
    vat_id: str = ""  #: upper-case letters and digits only

    # Soundex is computed on demand: neither blocking nor scoring needs it (Kölner Phonetik
    # serves both), and it is the costliest key to compute for unseen names.
    @property
    def first_sx(self) -> str:
        """Soundex of the (first) given name."""
        return _soundex(self.first_tokens[0]) if self.first_tokens else ""

    @property
    def last_sx(self) -> str:
        """Soundex of the surname."""
        return _soundex(self.last_compact) if self.last_compact else ""

    @property
    def birth_month(self) -> str:
        return self.birth[4:6]

    @property
    def birth_day(self) -> str:
        return self.birth[6:8]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _birth(value: Any) -> str:
    """``YYYYMMDD`` of a valid date given as ISO string, ``YYYYMMDD`` or date; else ``''``."""
    if not value:
        return ""
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d") if value.year >= 1000 else ""
    text = _text(value).strip()[:10]
    digits = text.replace("-", "") if len(text) == 10 else text
    if len(digits) != 8 or not digits.isdigit():
        return ""
    try:
        _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return ""
    return digits


def _compact_street(name: str) -> str:
    compact = name.replace(" ", "")
    for long, short in _STREET_SUFFIX:
        if compact.endswith(long):
            return compact[: -len(long)] + short
    return compact


@lru_cache(maxsize=65536)
def _street_parts(street: str) -> tuple[str, str, str]:
    """``(folded street name, folded house number, compact name)`` of a street line.

    Same keys as :func:`synchub.normalize.fold_street`, but the name is folded on its own so
    that the (cached) fold of a street name is shared by all house numbers in it.
    """
    name, number = split_street(street)
    if number is None:
        folded = fold_street(street)
        return ("", folded, "") if folded.isdigit() else (folded, "", _compact_street(folded))
    folded = _fold_street_name(name)
    hn = "".join(number.casefold().replace("–", "-").replace("—", "-").replace(".", "").split())
    return folded, hn, _compact_street(folded)


@lru_cache(maxsize=65536)
def _fold_street_name(name: str) -> str:
    return fold_street(name)


def _line2_key(folded_line2: str) -> str:
    """Compact street-like key of an address line 2 (to spot street and line 2 swapped)."""
    return _compact_street(folded_line2)


def _phone_kind(e164: str) -> str:
    try:
        return phone_type(e164)
    except NormalizationError:
        return "other"


@lru_cache(maxsize=65536)
def _given_parts(raw: str) -> tuple[str, str, tuple[str, ...], bool, frozenset[int], str]:
    """(folded, compact, tokens, initials only, nickname groups, Kölner) of a given name."""
    first = fold(raw)
    if not first:
        return "", "", (), False, frozenset(), ""
    tokens = tuple(first.split())
    groups: frozenset[int] = frozenset()
    for t in tokens:
        g = _NICKNAMES.get(t)
        if g:
            groups = groups | g
    return (
        first,
        first.replace(" ", ""),
        tokens,
        all(len(t) == 1 for t in tokens),
        groups,
        koelner_phonetik(tokens[0]),
    )


@lru_cache(maxsize=65536)
def _surname_parts(raw: str) -> tuple[str, str, tuple[str, ...], str]:
    """(folded, compact, tokens, Kölner) of a surname."""
    last = fold(raw)
    if not last:
        return "", "", (), ""
    compact = last.replace(" ", "")
    return last, compact, tuple(last.split()), koelner_phonetik(compact)


_soundex = lru_cache(maxsize=65536)(english_phonetic)


@lru_cache(maxsize=256)
def _gender(salutation: str) -> str:
    sal = fold(salutation).split(" ", 1)[0]
    return "m" if sal in _MALE_SALUTATIONS else "f" if sal in _FEMALE_SALUTATIONS else ""


_birth_cached = lru_cache(maxsize=65536)(_birth)


_EMPTY: frozenset[Any] = frozenset()


def _frozen(values: set[str]) -> frozenset[str]:
    """One shared empty set: features are kept for every golden record of a bulk load, and
    most of their sets (landlines, company e-mail domains) are empty."""
    return frozenset(values) if values else _EMPTY


def _set_emails(f: Features, raw: Iterable[Any]) -> None:
    emails = {_text(e).strip().lower() for e in raw if e}
    emails.discard("")
    f.emails = _frozen(emails)
    locals_: set[str] = set()
    domains: set[str] = set()
    for e in emails:
        local, _, dom = e.rpartition("@")
        local = _LOCAL_SEP.sub("", local.split("+", 1)[0])
        if len(local) >= 3 and local not in _GENERIC_LOCALS:
            locals_.add(local)
        if dom and dom not in _FREEMAIL:
            domains.add(dom)
    f.email_locals = _frozen(locals_)
    f.email_domains = _frozen(domains)


def _set_phones(f: Features, raw: Iterable[Any]) -> None:
    phones = {_text(p).strip() for p in raw if p}
    phones.discard("")
    mobiles, landlines, unverified = set(), set(), set()
    for p in phones:
        t = _phone_kind(p)
        if t == "unverified":
            # A number in no known range (placeholder, made up, mistyped) is no evidence: two
            # strangers exported with "(123) 456-7890" must not score as sharing a phone.
            unverified.add(p)
        elif t == "mobile":
            mobiles.add(p)
        elif t == "fixed":
            landlines.add(p)
    f.phones = _frozen(phones - unverified)
    # Usually every verified number is a mobile or every one a landline: share the set.
    f.mobiles = f.phones if mobiles == f.phones else _frozen(mobiles)
    f.landlines = f.phones if landlines == f.phones else _frozen(landlines)


def features(record: dict[str, Any], kind: str = "person") -> Features:
    """Precompute the comparison values of one canonical record (its JSON dict).

    ``kind`` is ``'person'`` or ``'company'``; a ``kind`` key in the record wins.  Every field
    may be missing, ``None`` or empty; invalid birth dates count as missing.  Values are
    expected in canonical form (emails lower-case, phones E.164) but are folded again where it
    matters, so raw input works too.
    """
    kind = _text(record.get("kind")) or kind
    f = Features(kind=kind)

    address = record.get("address") or {}
    if isinstance(address, dict):
        street_raw = _text(address.get("street")).strip()
        if street_raw:
            f.street, f.house_number, f.street_compact = _street_parts(street_raw)
        line2 = _text(address.get("line2")).strip()
        if line2:
            f.line2 = fold(line2)
            f.line2_key = _line2_key(f.line2)
        f.postcode = _text(address.get("postal_code")).upper().replace(" ", "")
        f.city = fold(_text(address.get("city")))
        f.region = fold(_text(address.get("region")))
        f.country = _text(address.get("country")).upper()

    raw_emails = record.get("emails")
    if raw_emails:
        _set_emails(f, raw_emails)
    raw_phones = record.get("phones")
    if raw_phones:
        _set_phones(f, raw_phones)

    if kind == "company":
        f.company = fold_company(_text(record.get("name")))
        dom = _text(record.get("domain")).strip().lower()
        if dom.startswith("www."):
            dom = dom[4:]
        f.domain = dom
        f.vat_id = _NON_ALNUM.sub("", _text(record.get("vat_id"))).upper()
    else:
        first = record.get("first_name")
        if first:
            (
                f.first, f.first_compact, f.first_tokens, f.first_is_initial, f.first_groups,
                f.first_kp,
            ) = _given_parts(_text(first))  # fmt: skip
        last = record.get("last_name")
        if last:
            f.last, f.last_compact, f.last_tokens, f.last_kp = _surname_parts(_text(last))
        sal = record.get("salutation")
        if sal:
            f.gender = _gender(_text(sal))
        birth = record.get("birth_date")
        if birth:
            f.birth = _birth(birth) if not isinstance(birth, str) else _birth_cached(birth)
            f.birth_year = f.birth[:4]
        company = record.get("company_name")
        if company:
            f.company = fold_company(_text(company))
    if f.company:
        f.company_compact = f.company.replace(" ", "")
        f.company_tokens = frozenset(f.company.split())
    return f


# ---------------------------------------------------------------------------------------------
# blocking
# ---------------------------------------------------------------------------------------------


def blocking_keys(f: Features) -> list[tuple[str, str]]:
    """Blocking keys of one record: ``(key_type, value)`` pairs in a stable order.

    Every key needs all of its parts present.  Postcodes enter keys with their characters
    sorted (``4750`` and ``4570`` give ``0457``), so a transposed postcode still blocks
    together; the cost is slightly larger blocks.  Persons:

    ===========  ======================================================  ======================
    key type     value                                                   still found despite
    ===========  ======================================================  ======================
    ``ln_pc``    Kölner Phonetik of last name + postcode                 first name, birth date,
                                                                         street, surname typos
    ``fn_pc``    Kölner Phonetik of first name + postcode                surname change, birth date
    ``fn_dob``   Kölner Phonetik of first name + birth date              surname change, a move
    ``dob_pc``   birth date + postcode                                   both names (typos)
    ``st_pc``    compact street + house number + postcode                names, birth date
    ``st_pc2``   first 5 letters of the compact street + house number +  names, birth date, a
                 first 2 postcode characters                             postcode typo late
    ``dob_st``   birth date + first 4 letters of the compact street      names, postcode, house
                                                                         number
    ``sl_pc``    first 4 letters of street and of address line 2,        street and line 2
                 sorted, + postcode                                      swapped
    ``nm_by``    Kölner Phonetik of first name + birth year, and the     a move plus a postcode
                 same for the last name (two keys)                       typo; swapped names
    ``n3_pc2``   first 3 letters of first and last name + 2 postcode     phonetic-changing typos
                 characters                                              late in the names
    ``nn``       both phonetic name codes, sorted                        swapped names, a move
    ``em``       each e-mail local part (role accounts left out)         everything but e-mail
    ``ph``       each phone number                                       everything but phone
    ===========  ======================================================  ======================

    Companies: ``cn`` (compact name), ``cn_pc`` (first name token + postcode), ``dom``
    (domain and non-freemail e-mail domains), ``vat``, ``st_pc``, ``em`` (full addresses), ``ph``.
    """
    keys: list[tuple[str, str]] = []
    pc = f.postcode
    pck = "".join(sorted(pc)) if pc else ""
    if f.kind == "company":
        if f.company_compact:
            keys.append(("cn", f.company_compact))
            if pc:
                keys.append(("cn_pc", f"{f.company.split(' ', 1)[0]}|{pck}"))
        for dom in sorted({f.domain, *f.email_domains} - {""}):
            keys.append(("dom", dom))
        if f.vat_id:
            keys.append(("vat", f.vat_id))
        if f.street_compact and pc:
            keys.append(("st_pc", f"{f.street_compact} {f.house_number}|{pck}"))
        keys.extend(("em", e) for e in sorted(f.emails))
        keys.extend(("ph", p) for p in sorted(f.phones))
        return keys

    lkp, fkp, dob = f.last_kp, f.first_kp, f.birth
    if pc:
        if lkp:
            keys.append(("ln_pc", f"{lkp}|{pck}"))
        if fkp:
            keys.append(("fn_pc", f"{fkp}|{pck}"))
        if dob:
            keys.append(("dob_pc", f"{dob}|{pck}"))
        if f.street_compact:
            keys.append(("st_pc", f"{f.street_compact} {f.house_number}|{pck}"))
            if len(pc) >= 2:
                keys.append(("st_pc2", f"{f.street_compact[:5]} {f.house_number}|{pc[:2]}"))
            if f.line2_key:
                # street and line 2 swapped (a building name, a district)
                keys.append(("sl_pc", "|".join(sorted((f.street_compact[:4], f.line2_key[:4]))) + f"|{pck}"))
    if dob:
        if f.street_compact:
            keys.append(("dob_st", f"{dob}|{f.street_compact[:4]}"))
        if fkp:
            keys.append(("fn_dob", f"{fkp}|{dob}"))
            keys.append(("nm_by", f"{fkp}|{f.birth_year}"))
        if lkp and lkp != fkp:
            keys.append(("nm_by", f"{lkp}|{f.birth_year}"))
    if f.first_compact and f.last_compact and len(pc) >= 2:
        keys.append(("n3_pc2", f"{f.first_compact[:3]}|{f.last_compact[:3]}|{pc[:2]}"))
    if lkp and fkp:
        keys.append(("nn", f"{fkp}|{lkp}" if fkp <= lkp else f"{lkp}|{fkp}"))
    keys.extend(("em", loc) for loc in sorted(f.email_locals))
    keys.extend(("ph", p) for p in sorted(f.phones))
    return keys


def _secondary(f: Features, key: tuple[str, str]) -> str:
    """Key that splits an over-large block (a common name in one postcode, a big house).

    It uses what the block key does not contain: the first name for surname blocks, the
    surname for first-name blocks, the postcode for company-name blocks.
    """
    kind = key[0]
    if f.kind == "company":
        return f.postcode if kind in ("cn", "cn_pc") else f.company_compact[:4]
    if kind in ("fn_pc", "fn_dob"):
        return f.last_kp
    if kind == "nm_by":
        return f.last_kp if key[1].split("|", 1)[0] == f.first_kp else f.first_kp
    return f.first_kp or f.first[:1]


def _sort_key(f: Features) -> str:
    """Sort order of the sorted-neighbourhood fallback inside over-large blocks."""
    if f.kind == "company":
        return f"{f.company_compact}|{f.postcode}|{f.street_compact}"
    return f"{f.first_compact}|{f.last_compact}|{f.birth}|{f.street_compact}"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

# Default weights in bits, log2(m/u) per agreement level, with the m/u reasoning next to each
# field.  m/u are estimates for German/DACH customer data, where namesakes and households are
# real; they were checked once against FEBRL (bench/febrl_bench.py, bench/README.md), which
# added the postcode-transposition and street/line-2-swap levels but did not lower the
# thresholds to FEBRL's optimum (about 12-14 bits), see the README for why.
_ADDRESS_WEIGHTS: dict[str, dict[str, float]] = {
    # street name + house number.  exact: m≈0.8, u≈1e-4 among candidate pairs (same surname or
    # birth date), capped by address_cap below because postcode and city are correlated with it.
    "street": {"exact": 7.0, "typo": 5.5, "name_only": 3.0, "other_number": 0.5, "different": -2.0},
    # postcode exact: m≈0.9, u≈0.03 within a blocking candidate set → ~5; different: m≈0.1 (moves)
    "postcode": {"exact": 4.0, "typo": 0.5, "different": -1.5},
    # city: the same town with another postcode is weak evidence (a big city has many
    # namesakes; in DACH the postcode already implies the town when it agrees)
    "city": {"exact": 3.0, "typo": 2.0, "other_postcode": 1.0, "different": -1.0},
    # line2 (c/o, building) is sparse and unreliable: weak in both directions.
    "line2": {"exact": 2.0, "typo": 1.0, "different": -0.5},
    "region": {"exact": 0.3, "different": -0.5},
    "country": {"exact": 0.0, "different": -3.0},
}

_PERSON_WEIGHTS: dict[str, dict[str, float]] = {
    # exact: m≈0.85, u≈0.006 (sum of squared first-name frequencies) → 7.1
    # nickname: m≈0.03, u≈0.001; initial: P(same letter|same)≈0.98 vs ≈0.07 → 3.8, but an
    # initial is weak evidence of *which* family member → 2.5
    "first_name": {
        "exact": 7.0, "nickname": 5.0, "partial": 4.0, "typo": 4.5, "initial": 2.5,
        "similar": 0.5, "different": -6.0,
    },
    # exact: m≈0.85, u≈0.003 → 8.1; different: m≈0.06 (marriage, divorce) → -4
    "last_name": {"exact": 8.0, "partial": 5.0, "typo": 5.5, "similar": 1.0, "different": -4.0},
    # applied once when the names only agree crosswise (first ↔ last)
    "names_swapped": {"penalty": -1.0},
    # exact: m≈0.9, u≈1/27000 → 14.6, lowered to 12 for placeholder dates (1900-01-01, 01.01.)
    # typo: m≈0.05, u≈30/27000 → 5.5 → 4
    "birth_date": {"exact": 12.0, "typo": 4.0, "different": -8.0},
    "gender": {"same": 0.3, "conflict": -6.0},
    **_ADDRESS_WEIGHTS,
    # a shared e-mail address: m≈0.4 (people have several), u≈4e-4 (family addresses) → 10;
    # same local part at another provider (anna.weber@gmx / anna.weber@web.de): m≈0.1, u≈0.006
    "email": {"exact": 10.0, "local": 4.0, "different": -1.0},
    # shared mobile is personal, a landline belongs to a household
    "phone": {"mobile": 10.0, "landline": 4.0, "shared": 6.0, "different": -1.0},
    "company_name": {"exact": 1.0, "typo": 0.5, "different": -0.5},
}  # fmt: skip

_COMPANY_WEIGHTS: dict[str, dict[str, float]] = {
    # company names are far more specific than personal names: exact alone is a match.
    "name": {"exact": 12.0, "typo": 8.0, "partial": 3.0, "different": -8.0},
    "domain": {"exact": 10.0, "different": -1.0},
    "vat_id": {"exact": 14.0, "different": -12.0},
    "email": {"exact": 8.0, "different": 0.0},
    "phone": {"shared": 6.0, "different": -0.5},
    **_ADDRESS_WEIGHTS,
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "person": {"upper": 20.0, "lower": 13.0, "address_cap": 12.0, "address_floor": -4.0},
    "company": {"upper": 12.0, "lower": 6.0, "address_cap": 8.0, "address_floor": -3.0},
}
_WEIGHTS = {"person": _PERSON_WEIGHTS, "company": _COMPANY_WEIGHTS}


class ScoreConfig(BaseModel):
    """Thresholds, weights and switches of the scorer.

    ``upper``/``lower`` are in bits (see the module docstring): ``score >= upper`` is a
    ``match`` (merged automatically), ``lower <= score < upper`` a ``possible`` duplicate for
    review.  ``weights`` overrides single levels of the defaults, e.g. ``{"phone":
    {"landline": 2}}``.  ``enabled`` restricts the compared fields (``None``: all of the
    kind's fields).  ``hard_rules=False`` turns off the household/VAT vetoes (only for
    synthetic benchmarks; never in production data).  ``address_cap``/``address_floor`` bound
    the summed address weight, because street, postcode and city are strongly correlated.

    Treat instances as immutable: derive changed ones with ``model_copy(update=...)``.

    Defaults (:meth:`defaults_for`): persons ``upper=20``, ``lower=13``.  A full name alone
    (7 + 8 bits, also with differing e-mails or phones) is at most ``possible``; a namesake in
    the same town with another street and postcode (12.5) is ``distinct``, so common names do
    not flood the review queue; a match needs a name plus an independent identifier: birth
    date (12), street address (up to 12), e-mail (10) or mobile (10).
    Companies ``upper=12``, ``lower=6``: an exact name without legal form is a match.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["person", "company"] = "person"
    upper: float = 20.0
    lower: float = 13.0
    weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    enabled: list[str] | None = None
    hard_rules: bool = True
    address_cap: float = 12.0
    address_floor: float = -4.0

    _cache: tuple[Any, ...] | None = PrivateAttr(default=None)

    @classmethod
    def defaults_for(cls, kind: str) -> ScoreConfig:
        """The default configuration for ``'person'`` or ``'company'``."""
        if kind not in _DEFAULTS:
            raise ValueError(f"unknown kind {kind!r} (expected 'person' or 'company')")
        return cls(kind=kind, **_DEFAULTS[kind])  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        if self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must not exceed upper ({self.upper})")
        self.table()
        return self

    def table(self) -> dict[str, dict[str, float]]:
        """The effective weights ``{field: {level: bits}}`` (defaults + overrides, enabled only)."""
        # Read the private slot directly: pydantic's attribute fallback is slow on a hot path.
        private = self.__pydantic_private__
        c = private.get("_cache") if private is not None else None
        if c is not None and c[0] == self.kind and c[1] is self.weights and c[2] is self.enabled:
            return c[3]
        base = _WEIGHTS[self.kind]
        for name, levels in self.weights.items():
            if name not in base:
                raise ValueError(f"unknown field {name!r} in weights; known: {sorted(base)}")
            unknown = set(levels) - set(base[name])
            if unknown:
                raise ValueError(
                    f"unknown level(s) {sorted(unknown)} for {name!r}; known: {sorted(base[name])}"
                )
        if self.enabled is not None:
            unknown = set(self.enabled) - set(base)
            if unknown:
                raise ValueError(f"unknown field(s) in enabled: {sorted(unknown)}")
        table = {
            name: {**levels, **self.weights.get(name, {})}
            for name, levels in base.items()
            if self.enabled is None or name in self.enabled or name == "names_swapped"
        }
        self._cache = (self.kind, self.weights, self.enabled, table)
        return table


_DEFAULT_CFG: dict[str, ScoreConfig] = {}


def _default_cfg(kind: str) -> ScoreConfig:
    cfg = _DEFAULT_CFG.get(kind)
    if cfg is None:
        cfg = _DEFAULT_CFG[kind] = ScoreConfig.defaults_for(kind)
    return cfg


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Score:
    """Result of :func:`score`.

    ``value`` is the summed weight in bits (log2 likelihood ratio, 0 = no evidence).
    ``reasons`` explains each field that contributed (``'first_name: nickname robert~bob
    +5.0'``).  ``levels`` maps field → agreement level.  ``veto`` names the hard rule that
    forbids a merge, or is ``None``; ``vetoed`` is the weight the vetoed field added to
    ``value`` (so ``value - vetoed`` is what every other field says), and ``reviewable`` says
    whether the other personal identifier agrees (the birth date of two people with different
    first names, the first name of two with different birth dates): then, and only then, may a
    vetoed pair go to review.
    """

    value: float
    reasons: list[str] = field(default_factory=list)
    levels: dict[str, str] = field(default_factory=dict)
    veto: str | None = None
    vetoed: float = 0.0
    reviewable: bool = False
    #: A first-name veto between two records with one birth date at one street address: the
    #: lower threshold is bar enough for review (two strangers share a full birth date and a
    #: street address about once in 20,000 pairs of neighbours).
    same_birth_and_street: bool = False
    #: A first-name veto where one name agrees crosswise while the other pair differs (the
    #: given name of one record in the other's surname field, one name replaced or entered in
    #: the wrong field): what that reading adds for the review bar (the agreeing name's weight
    #: instead of the surname disagreement).  Never used for an automatic merge.
    crosswise: float = 0.0

    @property
    def probability(self) -> float:
        """``value`` as a probability, assuming even prior odds."""
        v = max(-60.0, min(60.0, self.value))
        return 1.0 / (1.0 + 2.0 ** (-v))


@dataclass(slots=True)
class Decision:
    """Result of :func:`classify`: ``outcome`` is ``'match'``, ``'possible'`` or ``'distinct'``;
    ``veto`` the hard rule that kept it from ``match`` (a ``possible`` pair with a veto must
    never be merged without a person, not even on an exact key)."""

    outcome: str
    score: float
    reasons: list[str] = field(default_factory=list)
    veto: str | None = None


def _str_level(x: str, xc: str, y: str, yc: str) -> str:
    """Generic name comparison: exact / partial / typo / similar / different."""
    if x == y or xc == yc:
        return "exact"
    if " " in x or " " in y:
        xs, ys = set(x.split()), set(y.split())
        if xs <= ys or ys <= xs:
            return "partial"
    sim = _JW(xc, yc)
    if sim >= _JW_TYPO:
        return "typo"
    # Short names: Jaro-Winkler punishes a transposition ("wil"/"wli") too hard; an adjacent
    # swap is a typo, while one substituted letter ("tim"/"tom") is not.
    if len(xc) == len(yc) and sorted(xc) == sorted(yc) and _OSA(xc, yc, score_cutoff=1) <= 1:
        return "typo"
    if sim >= _JW_SIMILAR:
        return "similar"
    return "different"


def _first_level(a: Features, b: Features) -> str:
    """Compare two present given names: exact, nickname, partial, typo, initial, similar or
    different (also for male/female forms of one stem such as Daniel/Daniela)."""
    x, y = a.first, b.first
    if x == y or a.first_compact == b.first_compact:
        return "exact"
    if a.first_is_initial or b.first_is_initial:
        if x[0] == y[0]:
            return "initial" if a.first_is_initial != b.first_is_initial else "similar"
        return "different"
    if a.first_groups & b.first_groups:
        return "nickname"
    if _gender_pair(a, b):
        return "different"
    return _str_level(x, a.first_compact, y, b.first_compact)


def _gender_pair(a: Features, b: Features) -> bool:
    return _gender_variant(a.first_compact, b.first_compact) or (
        a.first_tokens[0] != b.first_tokens[0]
        and _gender_variant(a.first_tokens[0], b.first_tokens[0])
    )


def _first_detail(a: Features, b: Features, level: str) -> str:
    if level == "exact":
        return a.first
    if level != "different":
        return f"{a.first}~{b.first}"
    if not (a.first_is_initial or b.first_is_initial) and _gender_pair(a, b):
        return f"{a.first}/{b.first} (male/female form)"
    return f"{a.first}/{b.first}"


def _last_level(a: Features, b: Features) -> str:
    x, y = a.last, b.last
    if x == y or a.last_compact == b.last_compact:
        return "exact"
    return _str_level(x, a.last_compact, y, b.last_compact)


_GOOD_NAME = frozenset({"exact", "nickname", "partial", "typo", "initial"})
_CROSS_OK = frozenset({"exact", "typo", "partial"})


def _date_typo(x: str, y: str) -> str | None:
    """How two different ``YYYYMMDD`` dates can be one date mistyped, or ``None``."""
    diff = [i for i in range(8) if x[i] != y[i]]
    if len(diff) == 1:
        return "one digit"
    if len(diff) == 2:
        i, j = diff
        if j == i + 1 and x[i] == y[j] and x[j] == y[i]:
            return "transposed digits"
    if x[:4] == y[:4] and x[4:6] == y[6:8] and x[6:8] == y[4:6]:
        return "day/month swapped"
    return None


class _Acc:
    """Accumulates weights and, when explaining, levels and reasons of one comparison."""

    __slots__ = ("explain", "levels", "reasons", "total")

    def __init__(self, explain: bool) -> None:
        self.explain = explain
        self.total = 0.0
        self.reasons: list[str] = []
        self.levels: dict[str, str] = {}

    def add(self, name: str, level: str, w: float, detail: str = "") -> None:
        """Add a weight; in explain mode also its level and reason (callers build ``detail``
        only in explain mode, so the plain scoring path formats no strings)."""
        self.total += w
        if not self.explain:
            return
        self.levels[name] = level
        if detail:
            self.reasons.append(f"{name}: {level} {detail} {w:+.1f}")
        else:
            self.reasons.append(f"{name}: {level} {w:+.1f}")


def _street_level(a: Features, b: Features) -> str:
    """Street name + house number: exact / typo / name_only / other_number / different / ''."""
    if a.street_compact == b.street_compact:
        name_ok = "exact"
    elif _JW(a.street_compact, b.street_compact) >= _JW_STREET:
        name_ok = "typo"
    elif (a.line2_key and _JW(a.line2_key, b.street_compact) >= _JW_STREET) or (
        b.line2_key and _JW(a.street_compact, b.line2_key) >= _JW_STREET
    ):
        name_ok = "typo"  # street and line 2 swapped
    else:
        return "different"
    ha, hb = a.house_number, b.house_number
    if ha and hb:
        return name_ok if ha == hb else "other_number"
    return "name_only"


def _postcode_level(x: str, y: str) -> str:
    if x == y:
        return "exact"
    if len(x) == len(y):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        if len(diff) == 1:
            return "typo"
        if (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and x[diff[0]] == y[diff[1]]
            and x[diff[1]] == y[diff[0]]
        ):
            return "typo"
    return "different"


def _text_level(x: str, y: str) -> str:
    if x == y or x.replace(" ", "") == y.replace(" ", ""):
        return "exact"
    return "typo" if _JW(x, y) >= _JW_TYPO else "different"


def _address(
    acc: _Acc, a: Features, b: Features, t: dict[str, dict[str, float]], cfg: ScoreConfig
) -> None:
    """Add the address fields, with the positive sum capped and the negative sum floored."""
    pos = neg = 0.0
    found: list[tuple[str, str]] = []
    if a.street and b.street and "street" in t:
        level = _street_level(a, b)
        found.append(("street", level))
    pc_level = ""
    if a.postcode and b.postcode and "postcode" in t:
        level = pc_level = (
            "exact" if a.postcode == b.postcode else _postcode_level(a.postcode, b.postcode)
        )
        found.append(("postcode", level))
    if a.city and b.city and "city" in t:
        level = "exact" if a.city == b.city else _text_level(a.city, b.city)
        if pc_level == "different" and level != "different":
            level = "other_postcode"
        found.append(("city", level))
    if a.line2 and b.line2 and "line2" in t:
        level = "exact" if a.line2 == b.line2 else _text_level(a.line2, b.line2)
        found.append(("line2", level))
    if a.region and b.region and "region" in t:
        level = "exact" if a.region == b.region else "different"
        found.append(("region", level))
    for name, level in found:
        x = t[name][level]
        if x >= 0:
            pos += x
        else:
            neg += x
    if found:
        cap, floor = cfg.address_cap, cfg.address_floor
        total = (pos if pos < cap else cap) + (neg if neg > floor else floor)
        acc.total += total
        if acc.explain:
            acc.levels.update(found)
            parts = ", ".join(f"{n} {lv}" for n, lv in found)
            acc.reasons.append(f"address: {parts} {total:+.1f}")
    if a.country and b.country and a.country != b.country and "country" in t:
        acc.add("country", "different", t["country"]["different"], f"{a.country}/{b.country}")


def _score_person(a: Features, b: Features, cfg: ScoreConfig, explain: bool) -> Score:
    t = cfg.table()
    acc = _Acc(explain)
    add = acc.add
    veto: str | None = None

    # --- names, with a crosswise check for swapped first/last names ------------------------
    wfirst = t.get("first_name")
    wlast = t.get("last_name")
    fl = _first_level(a, b) if wfirst is not None and a.first and b.first else ""
    ll = _last_level(a, b) if wlast is not None and a.last and b.last else ""
    wf = wfirst[fl] if fl else 0.0  # type: ignore[index]
    wl = wlast[ll] if ll else 0.0  # type: ignore[index]
    vetoed = 0.0
    swapped = False
    given = ""  # the given names' level when read crosswise
    half = 0.0  # one cross pair agrees, the other differs: weight of the agreeing one
    if wfirst is not None and wlast is not None and (fl not in _GOOD_NAME or ll not in _GOOD_NAME):
        # Crosswise: c1 = a.first ~ b.last, c2 = a.last ~ b.first.  If b is the swapped record,
        # c1 compares the given names and c2 the surnames; if a is, the other way round.  The
        # reading with the higher weight is taken.
        c1 = (
            _str_level(a.first, a.first_compact, b.last, b.last_compact)
            if a.first and b.last
            else ""
        )
        c2 = (
            _str_level(a.last, a.last_compact, b.first, b.first_compact)
            if a.last and b.first
            else ""
        )
        # A reading with one cross pair clearly different is not taken: it could not tell the
        # given names from the surnames, and the charitable choice would let a household
        # member ("Anna Müller" / "Müller, Peter") escape the first-name rule.
        if "different" in (c1, c2):
            agreeing = c2 if c1 == "different" else c1
            if agreeing in _CROSS_OK:
                half = min(wfirst[agreeing], wlast[agreeing])
        elif c1 in _CROSS_OK or c2 in _CROSS_OK:
            pen = t["names_swapped"]["penalty"]
            w_b = (wfirst[c1] if c1 else 0.0) + (wlast[c2] if c2 else 0.0)
            w_a = (wfirst[c2] if c2 else 0.0) + (wlast[c1] if c1 else 0.0)
            if max(w_a, w_b) + pen > wf + wl:
                swapped = True
                x1, x2 = f"{a.first}~{b.last}", f"{a.last}~{b.first}"
                given, gtext, sur, stext = (c1, x1, c2, x2) if w_b >= w_a else (c2, x2, c1, x1)
                add("names_swapped", "swapped", pen)
                if given:
                    add("first_name", given, wfirst[given], f"{gtext} (crosswise)")
                if sur:
                    add("last_name", sur, wlast[sur], f"{stext} (crosswise)")
    if not swapped:
        if fl:
            if fl == "different":
                if not explain and cfg.hard_rules and not (a.birth and b.birth and (a.birth == b.birth or _date_typo(a.birth, b.birth))):
                    # Bulk scoring (_decide): without an agreeing birth date a vetoed pair is
                    # not even a review item, so the rest of its score is not needed.
                    return Score(acc.total, veto="first_name")
                veto = f"first_name: clearly different ({_first_detail(a, b, fl)})" if explain else "first_name"
                vetoed = wf
            add("first_name", fl, wf, _first_detail(a, b, fl) if explain else "")
        if ll:
            add(
                "last_name",
                ll,
                wl,
                (a.last if ll == "exact" else f"{a.last}~{b.last}") if explain else "",
            )

    # --- birth date --------------------------------------------------------------------------
    w = t.get("birth_date")
    reviewable = False
    if w is not None and a.birth and b.birth:
        if a.birth == b.birth:
            add("birth_date", "exact", w["exact"])
            reviewable = True  # twins, or one person with a wrong first name
        else:
            how = _date_typo(a.birth, b.birth)
            if how:
                add("birth_date", "typo", w["typo"], f"({how})" if explain else "")
                reviewable = True
            else:
                if veto is None:
                    veto = f"birth_date: differs ({a.birth}/{b.birth})" if explain else "birth_date"
                    vetoed = w["different"]
                    # father and son, or one person with a wrong birth date
                    # (or with the first name unknown on one side)
                    reviewable = given in _GOOD_NAME if swapped else fl in _GOOD_NAME or not fl
                add(
                    "birth_date",
                    "different",
                    w["different"],
                    f"{a.birth}/{b.birth}" if explain else "",
                )

    w = t.get("gender")
    if w is not None and a.gender and b.gender:
        if a.gender == b.gender:
            add("gender", "same", w["same"])
        else:
            add("gender", "conflict", w["conflict"])

    _address(acc, a, b, t, cfg)
    same_place = (reviewable and fl == "different" and not swapped and bool(a.street) and bool(b.street)
                  and _street_level(a, b) in ("exact", "typo"))

    # --- contact -----------------------------------------------------------------------------
    w = t.get("email")
    if w is not None and a.emails and b.emails:
        shared = a.emails & b.emails
        if shared:
            add("email", "exact", w["exact"], min(shared) if explain else "")
        elif a.email_locals & b.email_locals:
            add(
                "email",
                "local",
                w["local"],
                min(a.email_locals & b.email_locals) if explain else "",
            )
        else:
            add("email", "different", w["different"])
    w = t.get("phone")
    if w is not None and a.phones and b.phones:
        shared = a.phones & b.phones
        if not shared:
            add("phone", "different", w["different"])
        elif shared & a.mobiles:
            add("phone", "mobile", w["mobile"], min(shared) if explain else "")
        elif shared & (a.landlines | b.landlines):
            add("phone", "landline", w["landline"], min(shared) if explain else "")
        else:
            add("phone", "shared", w["shared"], min(shared) if explain else "")
    w = t.get("company_name")
    if w is not None and a.company and b.company:
        if a.company_compact == b.company_compact:
            add("company_name", "exact", w["exact"])
        elif _JW(a.company_compact, b.company_compact) >= _JW_TYPO:
            add("company_name", "typo", w["typo"])
        else:
            add("company_name", "different", w["different"])

    if not cfg.hard_rules:
        veto, vetoed = None, 0.0
    crosswise = max(0.0, half - wl) if half and veto is not None and veto.startswith("first_name") else 0.0
    if crosswise and explain:
        acc.reasons.append(f"names: one agrees crosswise ({a.first} {a.last} / {b.first} {b.last})")
    return Score(acc.total, acc.reasons, acc.levels, veto, vetoed, reviewable and veto is not None, same_place,
                 crosswise)


def _company_name_level(a: Features, b: Features) -> str:
    if a.company_compact == b.company_compact:
        return "exact"
    if _JW(a.company_compact, b.company_compact) >= 0.95:
        return "typo"
    ta, tb = a.company_tokens, b.company_tokens
    if ta <= tb or tb <= ta:
        return "partial"
    # token-wise typos: every token of the shorter name has a near-identical partner
    short, long = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    if all(any(_JW(s, t2) >= 0.92 for t2 in long) for s in short) and len(short) == len(long):
        return "typo"
    return "different"


def _score_company(a: Features, b: Features, cfg: ScoreConfig, explain: bool) -> Score:
    t = cfg.table()
    acc = _Acc(explain)
    veto: str | None = None
    vat_same = False
    if "vat_id" in t and a.vat_id and b.vat_id:
        if a.vat_id == b.vat_id:
            vat_same = True
            acc.add("vat_id", "exact", t["vat_id"]["exact"], a.vat_id)
        else:
            acc.add("vat_id", "different", t["vat_id"]["different"], f"{a.vat_id}/{b.vat_id}")
            veto = f"vat_id: differs ({a.vat_id}/{b.vat_id})"
    if "name" in t and a.company and b.company:
        level = _company_name_level(a, b)
        acc.add("name", level, t["name"][level], f"{a.company}~{b.company}")
        if level == "different" and not vat_same and veto is None:
            veto = f"name: clearly different ({a.company}/{b.company})"
    if "domain" in t:
        da = {a.domain, *a.email_domains} - {""}
        db = {b.domain, *b.email_domains} - {""}
        if da and db:
            shared = da & db
            if shared:
                acc.add("domain", "exact", t["domain"]["exact"], min(shared))
            else:
                acc.add("domain", "different", t["domain"]["different"])
    _address(acc, a, b, t, cfg)
    if "email" in t and a.emails and b.emails:
        shared = a.emails & b.emails
        if shared:
            acc.add("email", "exact", t["email"]["exact"], min(shared))
        elif t["email"]["different"]:
            acc.add("email", "different", t["email"]["different"])
    if "phone" in t and a.phones and b.phones:
        shared = a.phones & b.phones
        if shared:
            acc.add("phone", "shared", t["phone"]["shared"], min(shared))
        else:
            acc.add("phone", "different", t["phone"]["different"])
    return Score(acc.total, acc.reasons, acc.levels, veto if cfg.hard_rules else None)


def score(a: Features, b: Features, cfg: ScoreConfig | None = None) -> Score:
    """Compare two records' features; see :class:`Score` and the module docstring.

    Symmetric up to the order of the reasons' details.  Missing values (on either side) are
    neutral: they add nothing.  ``cfg`` defaults to :meth:`ScoreConfig.defaults_for` of
    ``a.kind``.
    """
    if cfg is None:
        cfg = _default_cfg(a.kind)
    return _score(a, b, cfg, True)


def _score(a: Features, b: Features, cfg: ScoreConfig, explain: bool) -> Score:
    if a.kind == "company":
        return _score_company(a, b, cfg, explain)
    return _score_person(a, b, cfg, explain)


def classify(a: Features, b: Features, cfg: ScoreConfig | None = None) -> Decision:
    """Decide whether two records are the same customer: ``match``, ``possible`` or ``distinct``.

    A hard-rule veto (see the module docstring) forbids ``match`` whatever the score; the veto
    is the first reason then. The pair is ``distinct``, unless the other personal identifier
    agrees (:attr:`Score.reviewable`) and every other field together would merge it (``value -
    vetoed >= upper``): two people who agree on everything but a first name or a birth date
    are twins, a father and his son, or one person with a wrong value, which only a person can
    tell, so the pair goes to review (``possible``) with a reason that says so. (A couple at one
    address, no birth dates known, stays ``distinct``: it is the common case, not a question.)
    Its ``score`` stays the full one, below ``lower`` or not.
    """
    if cfg is None:
        cfg = _default_cfg(a.kind)
    s = score(a, b, cfg)
    if s.veto is not None:
        if _reviewable(s, cfg):
            return Decision("possible", s.value, [f"rule: {s.veto}", _review_question(s), *s.reasons], s.veto)
        return Decision("distinct", s.value, [f"rule: {s.veto}", *s.reasons], s.veto)
    if s.value >= cfg.upper:
        outcome = "match"
    elif s.value >= cfg.lower:
        outcome = "possible"
    else:
        outcome = "distinct"
    return Decision(outcome, s.value, s.reasons)


# ---------------------------------------------------------------------------------------------
# bulk: dedupe, link, cluster
# ---------------------------------------------------------------------------------------------


@dataclass
class Counter:
    """Work counters of :func:`dedupe`/:func:`link` (pass one in to read them afterwards)."""

    comparisons: int = 0  #: pairs scored (each candidate pair once)
    block_pairs: int = 0  #: pairs generated by all blocks before de-duplication
    blocks: int = 0  #: blocks with at least two records (one side each for link)
    oversized_blocks: int = 0  #: blocks larger than ``max_block`` (split or windowed)


def _dedupe_block(
    members: list[int],
    feats: Sequence[Features],
    max_block: int,
    out: set[int],
    n: int,
    counter: Counter,
    key: tuple[str, str],
) -> None:
    """Add the candidate pairs of one dedupe block to ``out``, encoded as ``i * n + j`` (i < j)."""
    size = len(members)
    if size <= max_block:
        for x in range(size - 1):
            i = members[x]
            for j in members[x + 1 :]:
                out.add(i * n + j if i < j else j * n + i)
        counter.block_pairs += size * (size - 1) // 2
        return
    counter.oversized_blocks += 1
    subs: dict[str, list[int]] = {}
    for i in members:
        subs.setdefault(_secondary(feats[i], key), []).append(i)
    for key, sub in subs.items():
        if len(sub) < 2:
            continue
        if len(sub) <= max_block and key:
            _dedupe_block(sub, feats, max_block, out, n, counter, ("", ""))
            continue
        ordered = sorted(sub, key=lambda i: (_sort_key(feats[i]), i))
        for x, i in enumerate(ordered):
            for j in ordered[x + 1 : x + 1 + SN_WINDOW]:
                out.add(i * n + j if i < j else j * n + i)
                counter.block_pairs += 1


def _link_block(
    ls: list[int],
    rs: list[int],
    lf: Sequence[Features],
    rf: Sequence[Features],
    max_block: int,
    out: set[int],
    m: int,
    counter: Counter,
    key: tuple[str, str],
) -> None:
    """Add the cross pairs of one link block to ``out``, encoded as ``i * m + j``."""
    if len(ls) + len(rs) <= max_block:
        for i in ls:
            base = i * m
            for j in rs:
                out.add(base + j)
        counter.block_pairs += len(ls) * len(rs)
        return
    counter.oversized_blocks += 1
    subs: dict[str, tuple[list[int], list[int]]] = {}
    for i in ls:
        subs.setdefault(_secondary(lf[i], key), ([], []))[0].append(i)
    for j in rs:
        subs.setdefault(_secondary(rf[j], key), ([], []))[1].append(j)
    for key, (sl, sr) in subs.items():
        if not sl or not sr:
            continue
        if len(sl) + len(sr) <= max_block and key:
            _link_block(sl, sr, lf, rf, max_block, out, m, counter, ("", ""))
            continue
        merged = sorted(
            [(_sort_key(lf[i]), 0, i) for i in sl] + [(_sort_key(rf[j]), 1, j) for j in sr]
        )
        for x, (_k, side, idx) in enumerate(merged):
            for _k2, side2, idx2 in merged[x + 1 : x + 1 + SN_WINDOW]:
                if side2 != side:
                    out.add(idx * m + idx2 if side == 0 else idx2 * m + idx)
                    counter.block_pairs += 1


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk run.

    Bulk runs allocate hundreds of thousands of short-lived, acyclic objects (features, scores)
    that reference counting frees anyway; with a large heap every full collection walks all of
    it, which cost a third of the run time on FEBRL.  The previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: The reason given when a pair matches but a record of each side is vetoed against the other
#: (the matcher and ``dedupe`` then log a review item instead of joining the two).
CLASH_REASON = "rule: the hard rules keep a record of each customer apart"


def vetoed(a: Features, b: Features, cfg: ScoreConfig | None = None) -> bool:
    """Whether the hard rules forbid merging ``a`` and ``b`` (whatever the rest of the score)."""
    if cfg is None:
        cfg = _default_cfg(a.kind)
    return _score(a, b, cfg, False).veto is not None


def _reviewable(s: Score, cfg: ScoreConfig) -> bool:
    """Whether a vetoed pair goes to review: the other personal identifier agrees and every
    other field together (a name read crosswise included) reaches the bar."""
    return s.reviewable and s.value - s.vetoed + s.crosswise >= (cfg.lower if s.same_birth_and_street else cfg.upper)


def _review_question(s: Score) -> str:
    """What a reviewer of a vetoed pair is asked: what agrees, what differs, and what it may mean."""
    field_vetoed = (s.veto or "").split(":")[0]
    agree = [f for f, level in s.levels.items() if f != field_vetoed and level not in ("different", "conflict", "other_number")]
    if field_vetoed == "first_name":
        what, could = "a clearly different first name", "twins or siblings, or a wrong first name?"
    else:
        what, could = "a different birth date", "father and son, mother and daughter, or a wrong birth date?"
    return f"review: same {', '.join(agree) or 'other fields'} but {what}: {could}"


def _decide(a: Features, b: Features, cfg: ScoreConfig) -> Decision | None:
    """:func:`classify` for bulk runs: ``None`` for ``distinct``; reasons only for the rest."""
    s = _score(a, b, cfg, False)
    if s.value < cfg.lower if s.veto is None else not _reviewable(s, cfg):
        return None
    d = classify(a, b, cfg)
    return d if d.outcome != "distinct" else None


def dedupe(
    records: Sequence[dict[str, Any] | Features],
    kind: str = "person",
    cfg: ScoreConfig | None = None,
    *,
    counter: Counter | None = None,
    max_block: int = BULK_BLOCK,
) -> list[tuple[int, int, Decision]]:
    """Find duplicates inside ``records`` (canonical dicts, or their :func:`features` when the
    caller streams records and keeps only those): ``[(i, j, decision), ...]``.

    Only pairs with outcome ``match`` or ``possible`` are returned, ``i < j``, sorted by
    ``(i, j)``.  Candidate pairs come from :func:`blocking_keys`; a block with more than
    ``max_block`` records is split by a secondary key (the phonetic first name), and a
    sub-block that is still too large is compared by a sorted-neighbourhood window of
    :data:`SN_WINDOW`, so the work stays linear however skewed the data is.  Each pair is
    scored once.  Pass a :class:`Counter` to see how much work was done.
    """
    if cfg is None:
        cfg = _default_cfg(kind)
    if counter is None:
        counter = Counter()
    with gc_paused():
        return _dedupe(records, kind, cfg, counter, max_block)


def _dedupe(
    records: Sequence[dict[str, Any] | Features], kind: str, cfg: ScoreConfig, counter: Counter,
    max_block: int,
) -> list[tuple[int, int, Decision]]:
    feats = [r if isinstance(r, Features) else features(r, kind) for r in records]
    n = len(feats)
    index: dict[tuple[str, str], list[int]] = {}
    for i, f in enumerate(feats):
        for key in blocking_keys(f):
            index.setdefault(key, []).append(i)
    candidates: set[int] = set()
    for key, members in index.items():
        if len(members) > 1:
            counter.blocks += 1
            _dedupe_block(members, feats, max_block, candidates, n, counter, key)
    del index  # the largest structure of the run; scoring needs only the pairs
    return _score_candidates(candidates, n, feats, feats, cfg, counter)


def link(
    left: Sequence[dict[str, Any]],
    right: Sequence[dict[str, Any]],
    kind: str = "person",
    cfg: ScoreConfig | None = None,
    *,
    counter: Counter | None = None,
    max_block: int = BULK_BLOCK,
) -> list[tuple[int, int, Decision]]:
    """Link two record lists: ``[(left index, right index, decision), ...]`` (cross pairs only).

    Same blocking, limits and output rules as :func:`dedupe`; a block counts as over-large
    when its left and right members together exceed ``max_block``.
    """
    if cfg is None:
        cfg = _default_cfg(kind)
    if counter is None:
        counter = Counter()
    with gc_paused():
        return _link(left, right, kind, cfg, counter, max_block)


def _link(
    left: Sequence[dict[str, Any]],
    right: Sequence[dict[str, Any]],
    kind: str,
    cfg: ScoreConfig,
    counter: Counter,
    max_block: int,
) -> list[tuple[int, int, Decision]]:
    lf = [features(r, kind) for r in left]
    rf = [features(r, kind) for r in right]
    m = max(len(rf), 1)
    index: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for i, f in enumerate(lf):
        for key in blocking_keys(f):
            index.setdefault(key, ([], []))[0].append(i)
    for j, f in enumerate(rf):
        for key in blocking_keys(f):
            entry = index.get(key)
            if entry is not None:
                entry[1].append(j)
    candidates: set[int] = set()
    for key, (ls, rs) in index.items():
        if rs:
            counter.blocks += 1
            _link_block(ls, rs, lf, rf, max_block, candidates, m, counter, key)
    return _score_candidates(candidates, m, lf, rf, cfg, counter)


def _score_candidates(
    candidates: set[int], width: int, left: Sequence[Features], right: Sequence[Features],
    cfg: ScoreConfig, counter: Counter,
) -> list[tuple[int, int, Decision]]:
    """Score each candidate pair (encoded ``i * width + j``) once; keep match/possible."""
    out: list[tuple[int, int, Decision]] = []
    for code in sorted(candidates):
        i, j = divmod(code, width)
        a, b = left[i], right[j]
        d = _decide(a, b, cfg)
        if d is not None:
            out.append((i, j, d))
    counter.comparisons += len(candidates)
    return out


def cluster(
    n: int, pairs: Iterable[tuple[int, int] | tuple[int, int, Decision]]
) -> list[list[int]]:
    """Group ``0..n-1`` into clusters by the ``match`` pairs (union-find, transitive).

    ``pairs`` may be :func:`dedupe` output (only ``outcome == 'match'`` links) or plain
    ``(i, j)`` tuples (all link).  Returns every cluster including singletons, each sorted,
    ordered by smallest member.
    """
    parent = list(range(n))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        if len(p) > 2 and p[2].outcome != "match":  # type: ignore[misc]
            continue
        ra, rb = find(p[0]), find(p[1])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])
