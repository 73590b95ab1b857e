"""Prose for the sample crawl: real text that is on every machine, plus hand-written sentences.

English article bodies come from the documentation topics that ship with CPython
(`pydoc_data.topics`) and a few stdlib module docstrings: real, varied, offline prose, so the
language filter and the quality filters see what they would see on a real documentation page.
The other languages are hand-written sentences (30+ each) combined into paragraphs; they are
plain, everyday sentences so that a language identifier is confident about them. The Chinese
sentences stay inside GB2312 and the Japanese ones inside Shift_JIS, because pages in those
charsets are planted too.
"""
from __future__ import annotations

import functools
import re

# Anything that would make a *good* page fail a later filter is kept out of the English pool:
# C4 drops documents with "{" and lines with "javascript"/policy words; Gopher counts "#",
# ellipses and bullets.
_BAD_FOR_GOOD_PAGES = re.compile(
    r"[{}#•…]|\.\.\.|lorem|javascript|cookie|privacy policy|terms of use|>>>|::=|\bhttps?:", re.I)
# Pure-stdlib modules whose module, class and function docstrings add real prose to the pool.
_TOKENS = re.compile(r"\w+|[^\w\s]")
_DOCSTRING_MODULES = tuple("""argparse pickle json logging csv heapq bisect shelve tempfile textwrap
    zipfile sched queue getopt difflib collections functools os pathlib shutil subprocess threading
    email http.client urllib.request smtplib ftplib imaplib calendar datetime decimal fractions random
    statistics string codecs unittest doctest pdb inspect typing dataclasses enum contextlib
    configparser tarfile gzip socket ssl selectors mailbox mimetypes base64 hashlib hmac secrets uuid
    ipaddress locale gettext optparse cmd shlex trace tracemalloc timeit profile pstats warnings
    weakref copy pprint reprlib numbers types operator glob fnmatch linecache tokenize ast dis
    pickletools pkgutil runpy concurrent.futures asyncio.events asyncio.tasks asyncio.streams
    asyncio.locks asyncio.queues asyncio.base_events email.message email.utils email.header
    email.parser email.policy email.headerregistry email.mime.base http.server http.cookiejar
    http.cookies urllib.parse urllib.robotparser xml.etree.ElementTree xml.dom.minidom xml.sax.handler
    xmlrpc.client xmlrpc.server importlib.abc importlib.util importlib.metadata multiprocessing.pool
    multiprocessing.managers multiprocessing.queues unittest.mock unittest.case logging.handlers
    logging.config json.decoder json.encoder concurrent.futures.thread pydoc bdb code codeop
    compileall py_compile filecmp fileinput netrc plistlib quopri zipapp wave colorsys poplib
    wsgiref.handlers wsgiref.simple_server socketserver stat tabnanny symtable sysconfig site
    graphlib contextvars dbm""".split())


def _prose_paragraphs(raw: str) -> list[str]:
    """Unindented, multi-line prose blocks of a reST-ish text, joined into single lines."""
    out = []
    for block in re.split(r"\n\s*\n", raw):
        lines = block.split("\n")
        if any(ln.startswith((" ", "\t")) for ln in lines):
            continue  # code samples, grammar rules, tables, field lists
        if re.search(r"^[*=\-~^]{3,}$", block, re.M):
            continue  # section titles (underlined)
        # reST emphasis and literal markers are markup, not prose
        text = re.sub(r"\s+", " ", re.sub(r'\*+|``?|"', "", " ".join(lines))).strip()
        words = text.split()
        if len(words) < 15 or len(words) > 180 or not text.endswith("."):
            continue
        if _BAD_FOR_GOOD_PAGES.search(text):
            continue
        # Prose, not a list of names: Gopher wants >= 80% of NLTK tokens (punctuation included)
        # to hold a letter; keep a margin so a page of these paragraphs is never near the line.
        toks = _TOKENS.findall(text)
        if sum(any(c.isalpha() for c in t) for t in toks) < 0.84 * len(toks):
            continue
        out.append(text)
    return out


def _docstrings(mod) -> list[str]:
    import inspect
    docs = [mod.__doc__ or ""]
    for _, obj in sorted(vars(mod).items()):
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            docs.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            docs.extend(inspect.getdoc(f) or "" for _, f in sorted(vars(obj).items()) if inspect.isfunction(f))
    return docs


@functools.lru_cache(maxsize=1)
def english_paragraphs() -> tuple[str, ...]:
    """The pool of real English paragraphs, in a fixed order (sorted keys) for determinism."""
    from pydoc_data.topics import topics
    import importlib

    seen, out = set(), []
    sources = [topics[k] for k in sorted(topics)]
    import warnings

    for name in _DOCSTRING_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # some modules warn that they are deprecated
                sources.extend(_docstrings(importlib.import_module(name)))
        except Exception:  # a trimmed stdlib: fewer docstrings, same behaviour otherwise
            pass
    grams_seen: set[tuple[str, ...]] = set()
    for raw in sources:
        for p in _prose_paragraphs(raw):
            # Sibling docstrings repeat each other ("Fail if the two objects are equal ..." and
            # "... unequal ..."): two of them on one page would be duplicated n-grams, on two
            # pages a near-duplicate pair. Keep a paragraph only if most of its 6-grams are new.
            words = p.lower().split()
            grams = {tuple(words[i:i + 6]) for i in range(len(words) - 5)}
            if p in seen or len(grams & grams_seen) > 0.2 * len(grams):
                continue
            grams_seen |= grams
            seen.add(p)
            out.append(p)
    return tuple(out)


# Titles are built from these so that a page header reads like a tech blog's.
TITLE_PREFIXES = ("A practical guide to", "Understanding", "Notes on", "How Python handles",
                  "A closer look at", "Everything about", "Working with", "Explained:",
                  "Deep dive:", "Common questions about", "Tutorial:", "Reference notes on")

# ---------------------------------------------------------------------------------------------
# Other languages: everyday sentences, written for this generator.
# ---------------------------------------------------------------------------------------------
FOREIGN = {
    "fr": [
        "La ville a ouvert une nouvelle bibliothèque au centre du quartier historique.",
        "Les habitants peuvent désormais emprunter des livres, des films et des jeux pendant trois semaines.",
        "Le maire a expliqué que le projet avait été financé en partie par la région.",
        "Beaucoup de familles sont venues dès le premier jour pour découvrir les lieux.",
        "Il faisait très beau ce matin, mais la pluie est arrivée vers midi.",
        "Les prévisions annoncent un week-end plus frais avec du vent sur la côte.",
        "Pour préparer une bonne soupe, il faut d'abord faire revenir les oignons dans le beurre.",
        "Ajoutez ensuite les carottes, les pommes de terre et un peu de sel.",
        "Laissez cuire à feu doux pendant une vingtaine de minutes avant de mixer.",
        "Le train de huit heures a été annulé à cause d'un problème technique.",
        "Les voyageurs ont dû attendre le suivant sur un quai bondé.",
        "La société nationale des chemins de fer a promis un remboursement partiel des billets.",
        "Notre équipe a gagné le match de dimanche grâce à un but marqué dans les dernières minutes.",
        "L'entraîneur était fier de ses joueurs et a salué leur courage.",
        "Le musée présente cet automne une exposition consacrée aux peintres impressionnistes.",
        "On peut y voir des tableaux prêtés par plusieurs collections privées.",
        "Les étudiants ont manifesté devant l'université pour demander plus de logements.",
        "Selon une enquête récente, la moitié d'entre eux travaillent pendant leurs études.",
        "Le marché du samedi attire toujours autant de monde malgré la hausse des prix.",
        "Les producteurs locaux vendent des fruits, des légumes et du fromage de la région.",
        "Mon grand-père racontait souvent des histoires de son enfance à la campagne.",
        "Il se levait avant le soleil pour aider ses parents à la ferme.",
        "Le gouvernement a présenté hier un plan pour rénover les écoles les plus anciennes.",
        "Les travaux devraient commencer l'année prochaine et durer environ cinq ans.",
        "Cette application permet de suivre sa consommation d'énergie jour après jour.",
        "Elle affiche des conseils simples pour réduire la facture d'électricité.",
        "Nous avons passé nos vacances dans un petit village au bord de la mer.",
        "Le soir, nous allions nous promener sur la plage en regardant le coucher du soleil.",
        "Le médecin conseille de boire beaucoup d'eau quand il fait chaud.",
        "Il faut aussi éviter de sortir aux heures les plus chaudes de la journée.",
        "La boulangerie du coin fabrique encore son pain avec un vieux four à bois.",
        "Les clients font la queue le dimanche matin pour acheter des croissants.",
        "Le festival de musique accueillera plus de cinquante artistes cette année.",
        "Les billets sont déjà presque tous vendus depuis l'ouverture de la billetterie.",
    ],
    "de": [
        "Die Stadt hat im Zentrum der Altstadt eine neue Bibliothek eröffnet.",
        "Die Bürger können dort Bücher, Filme und Spiele für drei Wochen ausleihen.",
        "Der Bürgermeister erklärte, dass das Projekt zum Teil vom Land bezahlt wurde.",
        "Schon am ersten Tag kamen viele Familien, um sich die Räume anzusehen.",
        "Heute Morgen war das Wetter sehr schön, aber gegen Mittag fing es an zu regnen.",
        "Für das Wochenende wird kühleres Wetter mit starkem Wind an der Küste erwartet.",
        "Für eine gute Suppe brät man zuerst die Zwiebeln in etwas Butter an.",
        "Danach gibt man die Karotten, die Kartoffeln und ein wenig Salz dazu.",
        "Alles muss etwa zwanzig Minuten bei kleiner Hitze kochen, bevor man es püriert.",
        "Der Zug um acht Uhr ist wegen einer technischen Störung ausgefallen.",
        "Die Fahrgäste mussten auf einem überfüllten Bahnsteig auf den nächsten warten.",
        "Die Bahn hat versprochen, einen Teil des Fahrpreises zu erstatten.",
        "Unsere Mannschaft hat das Spiel am Sonntag mit einem Tor in der letzten Minute gewonnen.",
        "Der Trainer war stolz auf seine Spieler und lobte ihren Einsatz.",
        "Das Museum zeigt in diesem Herbst eine Ausstellung über die Maler des Impressionismus.",
        "Dort sind Bilder zu sehen, die von mehreren privaten Sammlungen ausgeliehen wurden.",
        "Die Studenten haben vor der Universität für mehr bezahlbare Wohnungen demonstriert.",
        "Nach einer aktuellen Umfrage arbeitet die Hälfte von ihnen neben dem Studium.",
        "Der Wochenmarkt am Samstag ist trotz der höheren Preise immer gut besucht.",
        "Die Bauern aus der Umgebung verkaufen dort Obst, Gemüse und Käse.",
        "Mein Großvater erzählte oft Geschichten aus seiner Kindheit auf dem Land.",
        "Er stand vor Sonnenaufgang auf, um seinen Eltern auf dem Hof zu helfen.",
        "Die Regierung hat gestern einen Plan zur Sanierung der ältesten Schulen vorgestellt.",
        "Die Arbeiten sollen im nächsten Jahr beginnen und ungefähr fünf Jahre dauern.",
        "Mit dieser App kann man seinen Stromverbrauch jeden Tag verfolgen.",
        "Sie zeigt einfache Tipps, wie man die Rechnung für Strom und Heizung senken kann.",
        "Wir haben unseren Urlaub in einem kleinen Dorf am Meer verbracht.",
        "Am Abend sind wir am Strand spazieren gegangen und haben den Sonnenuntergang beobachtet.",
        "Der Arzt rät, bei Hitze viel Wasser zu trinken und sich im Schatten aufzuhalten.",
        "Man sollte außerdem in den heißesten Stunden des Tages nicht draußen arbeiten.",
        "Die Bäckerei an der Ecke backt ihr Brot noch immer in einem alten Holzofen.",
        "Am Sonntagmorgen stehen die Kunden Schlange, um frische Brötchen zu kaufen.",
        "Das Musikfestival wird in diesem Jahr mehr als fünfzig Künstler begrüßen.",
        "Die Eintrittskarten waren schon wenige Tage nach dem Verkaufsstart fast ausverkauft.",
    ],
    "es": [
        "La ciudad ha abierto una nueva biblioteca en el centro del casco antiguo.",
        "Los vecinos ya pueden tomar prestados libros, películas y juegos durante tres semanas.",
        "El alcalde explicó que el proyecto fue financiado en parte por el gobierno regional.",
        "Muchas familias llegaron el primer día para conocer las nuevas salas.",
        "Esta mañana hacía muy buen tiempo, pero a mediodía empezó a llover.",
        "Para el fin de semana se espera un tiempo más fresco y viento fuerte en la costa.",
        "Para preparar una buena sopa, primero hay que sofreír la cebolla con un poco de aceite.",
        "Después se añaden las zanahorias, las patatas y una pizca de sal.",
        "Hay que dejarlo cocer a fuego lento unos veinte minutos antes de triturarlo.",
        "El tren de las ocho fue cancelado por un problema técnico en la vía.",
        "Los viajeros tuvieron que esperar el siguiente en un andén lleno de gente.",
        "La compañía ferroviaria prometió devolver una parte del precio de los billetes.",
        "Nuestro equipo ganó el partido del domingo con un gol en los últimos minutos.",
        "El entrenador estaba orgulloso de sus jugadores y elogió su esfuerzo.",
        "El museo presenta este otoño una exposición dedicada a los pintores impresionistas.",
        "Allí se pueden ver cuadros prestados por varias colecciones privadas.",
        "Los estudiantes se manifestaron frente a la universidad para pedir más viviendas.",
        "Según una encuesta reciente, la mitad de ellos trabaja mientras estudia.",
        "El mercado del sábado sigue atrayendo a mucha gente a pesar de la subida de los precios.",
        "Los agricultores de la zona venden frutas, verduras y queso de la región.",
        "Mi abuelo contaba a menudo historias de su infancia en el campo.",
        "Se levantaba antes del amanecer para ayudar a sus padres en la granja.",
        "El gobierno presentó ayer un plan para renovar las escuelas más antiguas del país.",
        "Las obras deberían comenzar el próximo año y durar unos cinco años.",
        "Esta aplicación permite seguir el consumo de energía de la casa día a día.",
        "También ofrece consejos sencillos para reducir la factura de la luz.",
        "Pasamos las vacaciones en un pequeño pueblo junto al mar.",
        "Por la tarde paseábamos por la playa mientras mirábamos la puesta de sol.",
        "El médico recomienda beber mucha agua cuando hace calor.",
        "También conviene no salir a la calle en las horas más calurosas del día.",
        "La panadería del barrio todavía hace el pan en un viejo horno de leña.",
        "Los domingos por la mañana los clientes hacen cola para comprar pan recién hecho.",
        "El festival de música recibirá este año a más de cincuenta artistas.",
        "Las entradas se agotaron casi por completo pocos días después de salir a la venta.",
    ],
    "ru": [
        "В центре старого города открылась новая городская библиотека.",
        "Жители теперь могут брать книги, фильмы и настольные игры на три недели.",
        "Мэр рассказал, что проект частично оплатило областное правительство.",
        "Уже в первый день многие семьи пришли посмотреть на новые залы.",
        "Утром была прекрасная погода, но к обеду начался сильный дождь.",
        "На выходные синоптики обещают прохладную погоду и сильный ветер на побережье.",
        "Чтобы приготовить хороший суп, сначала нужно обжарить лук на сливочном масле.",
        "Потом добавляют морковь, картофель и немного соли.",
        "Суп варят на медленном огне около двадцати минут, а затем измельчают блендером.",
        "Утренний поезд в восемь часов отменили из-за технической неисправности.",
        "Пассажирам пришлось ждать следующего поезда на переполненной платформе.",
        "Железная дорога пообещала вернуть часть стоимости билетов.",
        "Наша команда выиграла воскресный матч благодаря голу на последних минутах.",
        "Тренер гордился своими игроками и похвалил их за упорство.",
        "Этой осенью музей показывает выставку, посвящённую художникам импрессионизма.",
        "Там можно увидеть картины, которые предоставили несколько частных коллекций.",
        "Студенты вышли к университету, чтобы потребовать больше мест в общежитиях.",
        "По данным недавнего опроса, половина из них работает во время учёбы.",
        "Субботний рынок по-прежнему привлекает много людей, несмотря на рост цен.",
        "Местные фермеры продают там фрукты, овощи и домашний сыр.",
        "Мой дедушка часто рассказывал истории о своём детстве в деревне.",
        "Он вставал до рассвета, чтобы помогать родителям по хозяйству.",
        "Вчера правительство представило план ремонта самых старых школ страны.",
        "Работы должны начаться в следующем году и продлятся примерно пять лет.",
        "Это приложение позволяет каждый день следить за расходом электроэнергии.",
        "Оно также даёт простые советы, как уменьшить счета за свет и отопление.",
        "Мы провели отпуск в маленьком посёлке на берегу моря.",
        "По вечерам мы гуляли по пляжу и смотрели на закат.",
        "Врач советует в жаркую погоду пить больше воды и чаще бывать в тени.",
        "Также лучше не выходить на улицу в самые жаркие часы дня.",
        "Пекарня на углу до сих пор печёт хлеб в старой дровяной печи.",
        "По воскресеньям утром покупатели стоят в очереди за свежими булочками.",
        "В этом году музыкальный фестиваль примет больше пятидесяти исполнителей.",
        "Билеты были почти полностью распроданы через несколько дней после начала продаж.",
    ],
    "zh": [
        "市中心的老城区新开了一家公共图书馆。",
        "居民现在可以借阅图书、电影和游戏，借期为三个星期。",
        "市长介绍说，这个项目有一部分资金来自省政府。",
        "开馆第一天就有很多家庭前来参观新的阅览室。",
        "今天早上天气很好，但是中午开始下起了大雨。",
        "天气预报说周末会比较凉快，沿海地区还有大风。",
        "做一锅好汤，首先要把洋葱放在锅里用油炒香。",
        "然后加入胡萝卜、土豆和少量的盐。",
        "用小火煮二十分钟左右，再用搅拌机打碎。",
        "早上八点的火车因为技术故障被取消了。",
        "乘客们只好在拥挤的站台上等待下一班车。",
        "铁路公司表示会退还一部分车票的费用。",
        "我们的球队在最后几分钟打进一球，赢得了星期天的比赛。",
        "教练为队员们感到骄傲，并称赞了他们的努力。",
        "今年秋天，博物馆举办了一个关于印象派画家的展览。",
        "展览中的很多作品是从私人收藏家那里借来的。",
        "学生们在大学门口集会，要求学校提供更多的宿舍。",
        "根据最近的一项调查，一半的学生在读书期间同时打工。",
        "虽然物价上涨了，星期六的市场仍然吸引了很多人。",
        "附近的农民在那里出售水果、蔬菜和自己做的奶酪。",
        "我的爷爷经常给我们讲他小时候在农村生活的故事。",
        "他每天天还没亮就起床，帮助父母干农活。",
        "政府昨天公布了一项改造全国老旧学校的计划。",
        "工程预计明年开始，大约需要五年时间完成。",
        "这个手机应用可以让用户每天查看家里的用电情况。",
        "它还会提供一些简单的建议，帮助大家节省电费。",
        "我们在海边的一个小村子里度过了假期。",
        "每天傍晚，我们都会在沙滩上散步，看太阳慢慢落下。",
        "医生建议，天气炎热的时候要多喝水，少在太阳下活动。",
        "一天中最热的几个小时最好不要出门。",
        "街角的面包店到现在还用老式的木柴炉子烤面包。",
        "每个星期天早上，顾客们都会排队购买刚出炉的面包。",
        "今年的音乐节将邀请五十多位歌手和乐队参加演出。",
        "门票开始销售后没几天就几乎全部卖完了。",
    ],
    "ja": [
        "駅の近くに新しい市立図書館がオープンしました。",
        "市民は本や映画やゲームを三週間借りることができます。",
        "市長によると、この計画の費用の一部は県が負担したそうです。",
        "初日から多くの家族が新しい図書館を見に来ました。",
        "今朝はとてもいい天気でしたが、昼ごろから雨が降り始めました。",
        "週末は少し涼しくなり、海沿いでは風が強くなる見込みです。",
        "おいしいスープを作るには、まず玉ねぎをバターでじっくり炒めます。",
        "次に、にんじんとじゃがいもを入れて、塩を少し加えます。",
        "弱火で二十分ほど煮てから、ミキサーでなめらかにします。",
        "朝八時の電車は、機械の故障のため運休になりました。",
        "乗客は混雑したホームで次の電車を待たなければなりませんでした。",
        "鉄道会社は切符の代金の一部を払い戻すと発表しました。",
        "私たちのチームは、日曜日の試合で最後の数分に点を取って勝ちました。",
        "監督は選手たちを誇りに思い、その努力をほめました。",
        "この秋、美術館では印象派の画家たちの展覧会が開かれています。",
        "会場では、個人の収集家から借りた作品もたくさん見ることができます。",
        "学生たちは大学の前に集まり、寮を増やすよう求めました。",
        "最近の調査では、学生の半分が勉強しながらアルバイトをしているそうです。",
        "物価が上がっても、土曜日の朝市には今でも多くの人が集まります。",
        "地元の農家が、果物や野菜や手作りのチーズを売っています。",
        "祖父はよく、田舎で過ごした子どものころの話をしてくれました。",
        "毎朝日が昇る前に起きて、両親の畑仕事を手伝っていたそうです。",
        "政府は昨日、古い学校を改修するための計画を発表しました。",
        "工事は来年始まり、およそ五年かかる予定です。",
        "このアプリを使うと、毎日の電気の使用量を確認することができます。",
        "電気代を節約するための簡単なアドバイスも表示されます。",
        "私たちは夏休みを海の近くの小さな町で過ごしました。",
        "夕方になると、浜辺を散歩しながら夕日を眺めました。",
        "暑い日には水をたくさん飲むように、と医者は言っています。",
        "一日のうちで一番暑い時間には、外に出ないほうがいいでしょう。",
        "角のパン屋さんは、今でも古い薪の窯でパンを焼いています。",
        "日曜日の朝には、焼きたてのパンを買う人たちが店の前に並びます。",
        "今年の音楽祭には、五十組以上の歌手やバンドが出演する予定です。",
        "チケットは発売から数日で、ほとんど売り切れてしまいました。",
    ],
}

# Page chrome in each language, so a foreign page is foreign all the way through.
FOREIGN_CHROME = {
    "fr": ("Accueil", "Actualités", "Contact", "Tous droits réservés", "À lire aussi"),
    "de": ("Startseite", "Nachrichten", "Kontakt", "Alle Rechte vorbehalten", "Lesen Sie auch"),
    "es": ("Inicio", "Noticias", "Contacto", "Todos los derechos reservados", "Lea también"),
    "ru": ("Главная", "Новости", "Контакты", "Все права защищены", "Читайте также"),
    "zh": ("首页", "新闻", "联系我们", "版权所有", "相关阅读"),
    "ja": ("ホーム", "ニュース", "お問い合わせ", "無断転載を禁じます", "関連記事"),
}

FIRST_NAMES = ("James", "Maria", "Robert", "Linda", "Michael", "Sarah", "David", "Emma", "Thomas",
               "Olivia", "Daniel", "Sophie", "Andrew", "Hannah", "Peter", "Claire", "Lukas", "Julia")
LAST_NAMES = ("Johnson", "Garcia", "Miller", "Wilson", "Anderson", "Thompson", "Martinez", "Clarke",
              "Schneider", "Dubois", "Fischer", "Bennett", "Harrison", "Morgan", "Walsh", "Keller")

# Safe words for host names: none is, or contains, a banned word or subword of the URL filter.
HOST_WORDS = ("pyguide", "codenotes", "devjournal", "techdaily", "learnstack", "bytefield",
              "datacraft", "openlesson", "mindthecode", "syntaxcorner", "loopandbranch", "refdesk",
              "quickstudy", "dailydev", "softbits", "pagefolio", "bluepencil", "plainpaper",
              "webdigest", "greenfield", "northwind", "riverside", "stonebridge", "hilltop",
              "lakeview", "maplegrove", "oakridge", "clearwater", "brightpath", "silverline")
TLDS = ("com", "org", "net", "io", "dev", "info", "co.uk", "de", "fr", "com.au")
FOREIGN_TLDS = {"fr": "fr", "de": "de", "es": "es", "ru": "ru", "zh": "cn", "ja": "jp"}


class ProseDeck:
    """Real paragraphs dealt without replacement, so pages share (almost) no text.

    Shared paragraphs would make unrelated pages near-duplicates and would trip trafilatura's
    process-wide dedup (a block over 100 characters seen more than 3 times is dropped). When the
    deck runs out it is reshuffled and paragraphs come back remixed (see `_remix`), which gives
    a new string while staying real prose. One page never gets two versions of the
    same paragraph (they would be duplicated n-grams): call `new_page()` between pages.
    """

    def __init__(self, rng, paragraphs=None):
        self._rng = rng
        self._pool = list(paragraphs or english_paragraphs())
        self._cycle = 0
        self._queue: list[tuple[int, str]] = []
        self._skipped: list[tuple[int, str]] = []
        self._page: set[int] = set()

    def new_page(self) -> None:
        self._page = set()

    def _refill(self) -> None:
        order = [((i,), p) for i, p in enumerate(self._pool)]
        self._rng.shuffle(order)
        if self._cycle:
            # Reused paragraphs come back changed: sentences rotated, plus one sentence borrowed
            # from another paragraph. A fixed added phrase would instead be the same n-gram in
            # every reused paragraph of a page.
            partners = order[:]
            self._rng.shuffle(partners)
            order = [((i, j), _remix(p, q, self._cycle)) for ((i,), p), ((j,), q) in zip(order, partners) if i != j]
        self._cycle += 1
        self._queue = order[::-1]  # pop() from the end

    def take(self, n: int, min_chars: int = 0, max_chars: int = 10**9) -> list[str]:
        out: list[str] = []

        def fits(item):
            return self._page.isdisjoint(item[0]) and min_chars <= len(item[1]) <= max_chars

        for item in list(self._skipped):  # paragraphs passed over earlier go first
            if len(out) < n and fits(item):
                out.append(item[1])
                self._page.update(item[0])
                self._skipped.remove(item)
        while len(out) < n:
            if not self._queue:
                self._refill()
            item = self._queue.pop()
            if fits(item):
                out.append(item[1])
                self._page.update(item[0])
            elif len(self._skipped) < 200:
                self._skipped.append(item)
        return out


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _remix(paragraph: str, partner: str, k: int) -> str:
    sents = _SENTENCE_SPLIT.split(paragraph)
    other = _SENTENCE_SPLIT.split(partner)
    k %= len(sents)
    return " ".join(sents[k:] + sents[:k] + [other[k % len(other)]])


def foreign_paragraphs(lang: str, rng, n_paras: int) -> list[str]:
    """n paragraphs of 3-5 sentences of `lang`, sentences drawn without repeats inside a page."""
    sents = FOREIGN[lang][:]
    rng.shuffle(sents)
    joiner = "" if lang in ("zh", "ja") else " "
    out, i = [], 0
    for _ in range(n_paras):
        k = rng.randint(3, 5)
        chunk = [sents[(i + j) % len(sents)] for j in range(k)]
        i += k
        out.append(joiner.join(chunk))
    return out
