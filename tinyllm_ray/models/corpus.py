"""The tokenizer's training text: English, prompt scaffolding and seeded arithmetic lines.

Why embedded rather than downloaded: tiny models are built on machines with no hub and
must be byte-identical everywhere, so the text is part of the code (and of the cache key
through ``BUILD_VERSION`` in :mod:`tinyllm_ray.models.tiny`). It holds the vocabulary of
the multiple-choice prompts (``Question``, ``Answer Choices``, ``(a)``, ``Rationale``,
``Verdict``, ``predict:``) so those pieces become whole tokens.
"""

from __future__ import annotations

import random

_ENGLISH = """\
The quick brown fox jumps over the lazy dog. A small model can learn a simple task when
the examples are clear and the answers are consistent. Water boils at one hundred degrees
Celsius at sea level, and it freezes at zero degrees. The sun rises in the east and sets in
the west. Plants need light, water and air to grow; animals need food, water and shelter.
People use tools to build houses, roads, bridges and machines. A teacher explains an idea,
and a student practices until the idea becomes easy. Most birds can fly, but penguins and
ostriches cannot. Fish live in water and breathe with gills. The heart pumps blood through
the body, and the lungs bring oxygen into the blood. Metals conduct heat and electricity
better than wood or plastic. When you drop a ball, gravity pulls it toward the ground.
The moon goes around the earth, and the earth goes around the sun once every year.
A day has twenty four hours, an hour has sixty minutes, and a minute has sixty seconds.
If it rains, the ground gets wet; if the ground is wet, it may have rained or someone may
have watered the garden. Children often play outside after school, while their parents
work in offices, shops, farms, hospitals and factories. Doctors treat patients, nurses
care for them, and scientists study diseases to find new medicines. A library holds many
books about history, science, art, music and mathematics. Some questions are easy, some
are hard, and some have more than one reasonable answer. Good reasoning checks each step,
compares the options, and rejects the choices that contradict the facts. Which one is
bigger, heavier, faster, older, younger, warmer or colder? Where would you find a pencil,
a spoon, a pillow, a wallet or a key? What do you call a person who writes stories?
Why does ice float on water? Because ice is less dense than liquid water. How many legs
does a spider have? A spider has eight legs, an insect has six legs, and a dog has four.
Electricity flows through a closed circuit. A magnet attracts iron and steel. Sound travels
faster in water than in air. Light travels faster than sound, so we see lightning before we
hear thunder. Evaporation turns liquid water into vapor; condensation turns vapor back into
drops. Seeds grow into plants, plants make flowers, and flowers make fruit with new seeds.
The patient had a fever, a cough and a headache, so the doctor ordered a test. The study
found that the treatment reduced the risk, but the evidence was not strong enough to be
sure. Yes, no, maybe. True or false. Agree, disagree, neither. It is possible that the
statement is true, but it is also possible that it is false. The premise supports the
hypothesis, contradicts it, or is neutral. She bought three apples and two oranges, then
gave one apple to her friend. He had twelve marbles and lost five of them. They walked
seven miles on Monday and nine miles on Tuesday. How many are left? How many in total?
What is the difference? What is the sum? Multiply, divide, add, subtract, equals, plus,
minus, times, half, double, twice, first, second, third, last, next, before, after.
Geography and history: Mountains, rivers, deserts, forests, oceans, islands, valleys and
volcanoes shape where people settle. Ancient cities grew beside fertile rivers because farmers
could irrigate wheat, barley and rice. Empires expanded through trade, conquest and marriage,
then declined when taxes, famine, drought or civil war weakened them. Sailors navigated by the
stars, merchants exchanged silk, spices, salt and silver, and travelers recorded strange customs
in their journals. The printing press spread knowledge quickly; newspapers, pamphlets and
encyclopedias followed. Railways, telegraphs, telephones, automobiles, airplanes, computers and
satellites connected distant continents. Governments write laws, courts interpret them, and
citizens vote in elections. A democracy protects freedom of speech, religion and assembly.
Biology and medicine: Cells contain a nucleus, membranes, proteins and genetic material called
DNA. Bacteria and viruses can cause infections; vaccines train the immune system to recognize
them. Antibiotics kill bacteria but do not work against viruses. Muscles contract, bones support
the skeleton, nerves carry signals, and the brain interprets vision, hearing, smell, taste and
touch. Hormones such as insulin regulate blood sugar. Diabetes, asthma, cancer, pneumonia,
influenza, malaria and tuberculosis are common diseases. Clinical trials compare a treatment
with a placebo; researchers measure outcomes, report significance, and discuss limitations.
Symptoms include pain, swelling, fatigue, nausea, dizziness, rash and shortness of breath.
Physics and chemistry: Energy is conserved; it changes form between kinetic, potential, thermal,
chemical, electrical and nuclear energy. Atoms combine into molecules; acids react with bases
to form salts and water. Oxygen supports combustion, carbon dioxide is released when fuels burn,
and photosynthesis converts sunlight, water and carbon dioxide into glucose. Friction slows
moving objects, pressure equals force divided by area, and temperature measures the average
motion of particles. Solids keep their shape, liquids take the shape of their container, gases
expand to fill it. Rainbows appear when sunlight is refracted inside raindrops.
Everyday life: On weekends families cook breakfast, clean the kitchen, wash laundry, visit
grandparents, repair bicycles, plant vegetables, walk the dog and watch movies. Customers pay
with cash or cards at the supermarket, bakery, pharmacy and restaurant. Umbrellas keep us dry,
blankets keep us warm, refrigerators keep food fresh, and alarm clocks wake us up. Furniture
includes chairs, tables, sofas, beds, shelves, desks and cabinets. Clothing includes shirts,
jackets, trousers, dresses, shoes, socks, gloves, scarves and hats. Vehicles include buses,
trucks, trains, boats, bicycles, motorcycles, helicopters and ambulances. Jobs include
carpenter, plumber, electrician, farmer, pilot, lawyer, engineer, journalist, musician, painter,
chef, firefighter, police officer, librarian, accountant, programmer and dentist.
Feelings and actions: Someone who is happy may smile, laugh or sing; someone who is sad may cry;
someone who is angry may shout; someone who is tired may yawn and sleep; someone who is hungry
will eat; someone who is curious will ask questions, read, explore and experiment. Friends share,
cooperate, apologize, forgive and celebrate together. Competitors practice, train, compete, win
or lose, and congratulate each other. A careful reader notices details, summarizes arguments,
identifies assumptions, evaluates evidence, and draws conclusions that follow logically.
Common words: about above across actually afraid again against almost alone along already also
although always among amount ancient angle animal another anything anywhere appear area argue
arrive article attention attack average avoid balance beautiful become begin behavior behind
believe belong beneath beside between beyond blanket border bottom branch bright bring broken
brother build burn business calculate capital careful carry catch cause center century certain
chance change chapter character charge cheap check choose circle citizen claim climate close
coast collect college color common company compare complete concern condition consider contain
continue control correct count country couple course cover create crowd culture current danger
decide deep defend degree depend describe design detail develop different direction discover
distance divide double during early earth effect effort either element energy enough entire
environment equal escape especially event every evidence exactly example except exercise expect
experience explain express extra factor family famous father feature field figure final finger
follow force foreign forget forward found frame free fresh front future garden general gentle
glass global government grand ground group guess guide habit handle happen hardly health heavy
height history hold hope huge human hundred hunt husband imagine important improve include
increase indeed industry inside instead interest island issue journey judge kitchen knowledge
language large later laugh layer leader learn least leave length letter level likely limit
listen little local lower machine major manage market master material matter measure member
memory method middle million minute mirror modern moment mother motion mountain movement music
narrow nation natural nearly necessary neighbor neither nervous network noise normal notice
number object obvious ocean offer office often opinion order origin other outside owner paper
parent particular partner pattern peace period permit person picture piece place planet please
pocket point popular position possible power practice prepare present pretty prevent price
private problem process produce product promise proper protect prove provide public purpose
quality quarter quick quiet rather reach ready real reason receive record reduce region relate
remain remember remove repeat replace report require result return rhythm river rough round
safety sample scale school science season section select sense series serve settle several shadow
shape share shelter short should shoulder signal silent similar simple since single sister
situation skill smooth society soldier solid solution source space special speed spirit spread
spring square stage standard station steady stomach straight strange stream street strength
strong structure student subject success sudden suggest summer supply support surface surprise
symbol system target teach team temperature thick thin thought thousand through throw together
tomorrow total toward trade travel trouble truth unless until usual valley value various village
visit voice volume weather weight western whether whole width window winter within without
wonder world worry writer yellow yesterday
"""

_PROMPT_VOCAB = """\
Question: Which of these is a mammal?
Answer Choices: (a) shark (b) whale (c) trout (d) eel (e) none of the above
Rationale: A whale breathes air and feeds its young with milk, so it is a mammal.
Answer: (b)
Q: Where do you keep milk cold? Answer Choices: (a) oven (b) refrigerator (c) drawer
A: Let's think step by step. Milk must stay cold, and a refrigerator keeps food cold.
Thus, the answer is (b).
Let's think step by step. Thus, the answer is (a). Thus, the answer is (c).
Thus, the answer is (d). Thus, the answer is (e). So the answer is yes. So the answer is no.
Verdict: correct. Verdict: wrong. Verdict: uncertain.
Is the rationale above correct, wrong, or uncertain? Evaluate the reasoning. Verdict:
predict: Question: ... Answer Choices: ... explain teacher: ... evaluate: ...
predict: explain llama: explain qwen: explain t5: explain flan: evaluate:
Context: Premise: Hypothesis: Options: Choices: Correct answer: The correct answer is
Answer: yes Answer: no Answer: maybe Answer: true Answer: false
entailment contradiction neutral. (a) (b) (c) (d) (e) (f) (A) (B) (C) (D) (E) a) b) c) d)
User: Assistant: System: You are a helpful assistant. Explain your reasoning.
"""


def _synthetic_lines(seed: int, n: int = 400) -> list[str]:
    """Seeded arithmetic and multiple-choice lines: digits, numbers and prompt scaffolding."""
    rng = random.Random(seed)
    nouns = ["apples", "books", "coins", "birds", "cars", "pens", "cups", "stones", "trees", "boxes"]
    names = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivan", "Jo"]
    letters = "abcde"
    lines = [" ".join(str(i) for i in range(101)), "0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 1/2 50%"]
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op, val = rng.choice([("plus", a + b), ("minus", a - b), ("times", a * b)])
        who, what = rng.choice(names), rng.choice(nouns)
        opts = rng.sample(range(-99, 999), 4) + [val]
        rng.shuffle(opts)
        choice = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(opts))
        gold = letters[opts.index(val)]
        verdict = rng.choice(["correct", "wrong", "uncertain"])
        lines.append(
            f"Question: {who} has {a} {what}. What is {a} {op} {b}? Answer Choices: {choice}\n"
            f"Rationale: {a} {op} {b} equals {val}. Thus, the answer is ({gold}). Verdict: {verdict}"
        )
    return lines


def corpus(seed: int = 0) -> list[str]:
    """The tokenizer's training text: ~10 KB of English and prompt scaffolding, then 400
    seeded synthetic multiple-choice lines (numbers, options, verdicts) drawn from ``seed``."""
    return _ENGLISH.splitlines() + _PROMPT_VOCAB.splitlines() + _synthetic_lines(seed)
