"""The target domain's sentences: smart-speaker commands from a small slot grammar.

Each intent (timers, alarms, lights, ...) is a list of templates whose ``{slots}`` expand,
recursively, through ``RULES``; numbers are always written as words. Expanding an intent gives
every distinct sentence it can say, normalized with ``speechtune.text.normalize_text``::

    >>> sentences = intent_sentences()
    >>> sorted(sentences)[:3]
    ['alarm', 'clock', 'lights']
    >>> "SET A TIMER FOR TEN MINUTES" in sentences["timer"]
    True

Intents expand to very different sizes (alarms to thousands, the clock to a few dozen), so the
corpus draws at most ``MAX_SENTENCES_PER_INTENT`` of each (``sample_sentences``): every intent
is heard, and a held-out sentence is one the grammar could have produced for training but did not.
"""
import itertools
import random
import re
from typing import Dict, List

from speechtune.text import normalize_text

MAX_SENTENCES_PER_INTENT = 300

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """Spell 0..99 as a speaker would say it.

    >>> number_words(45)
    'forty five'
    """
    if not 0 <= n < 100:
        raise ValueError(f"number_words covers 0..99, not {n}")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


def _numbers(*values: int) -> List[str]:
    return [number_words(n) for n in values]


RULES: Dict[str, List[str]] = {
    # Times and durations.
    "hour": _numbers(*range(1, 13)),
    "minute": ["oh five", "ten", "fifteen", "twenty", "thirty", "forty", "forty five", "fifty"],
    "clock": ["{hour} o'clock", "{hour} {minute}", "half past {hour}", "quarter past {hour}",
              "quarter to {hour}"],
    "time": ["{clock}", "{clock} in the morning", "{clock} in the evening", "noon", "midnight"],
    "weekday": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "day": ["today", "tomorrow", "tonight", "this weekend", "on {weekday}"],
    "minutes": _numbers(2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 45, 50, 90),
    "seconds": _numbers(10, 15, 20, 30, 45, 90),
    "duration": ["{minutes} minutes", "{seconds} seconds", "one minute", "one hour", "two hours",
                 "half an hour", "an hour and a half", "{minutes} and a half minutes"],
    "timer_length": ["{minutes} minute", "{seconds} second", "one hour"],
    # The home.
    "room": ["kitchen", "living room", "bedroom", "bathroom", "hallway", "office", "dining room",
             "garage", "basement", "den", "nursery", "guest room", "attic", "laundry room"],
    "on_off": ["on", "off"],
    "up_down": ["up", "down"],
    "percent": _numbers(10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90) + ["one hundred"],
    "color": ["red", "blue", "green", "purple", "orange", "yellow", "pink", "warm white",
              "cool white"],
    "degrees": _numbers(*range(60, 81)),
    # Media.
    "genre": ["jazz", "classical", "rock", "pop", "country", "blues", "hip hop", "folk",
              "reggae", "soul", "disco", "piano"],
    "playlist": ["workout", "dinner", "morning", "party", "study", "road trip", "relaxing",
                 "sleep", "summer", "cooking"],
    "volume": _numbers(*range(1, 11)),
    # The world.
    "city": ["boston", "chicago", "seattle", "denver", "london", "paris", "tokyo", "miami",
             "dallas", "austin", "new york", "san francisco", "los angeles", "toronto", "berlin",
             "madrid", "phoenix", "atlanta"],
    "weather_word": ["rain", "snow", "be windy", "be sunny", "be cloudy"],
    # Lists and reminders.
    "item": ["milk", "eggs", "bread", "butter", "apples", "bananas", "coffee", "cheese", "rice",
             "pasta", "onions", "tomatoes", "orange juice", "paper towels", "dish soap",
             "chicken", "yogurt", "carrots"],
    "count": _numbers(*range(2, 13)),
    "task": ["call mom", "call the doctor", "take out the trash", "water the plants",
             "walk the dog", "feed the cat", "pay the bills", "buy a birthday card",
             "pick up the kids", "check the oven", "take my medicine", "charge my phone",
             "lock the front door", "move the car"],
    "small": _numbers(*range(1, 21)),
    "operation": ["plus", "minus", "times"],
}

INTENTS: Dict[str, List[str]] = {
    "timer": [
        "set a timer for {duration}", "start a timer for {duration}", "timer for {duration}",
        "set a {timer_length} timer", "cancel the {timer_length} timer",
        "how much time is left on the {timer_length} timer", "add {duration} to the timer",
        "cancel all timers", "how much time is left on my timer",
    ],
    "alarm": [
        "wake me up at {time}", "wake me up at {time} {day}", "set an alarm for {time}",
        "set an alarm for {time} {day}", "set an alarm for {time} every {weekday}",
        "cancel my alarm for {time}", "cancel my {clock} alarm", "move my alarm to {time}",
        "snooze for {minutes} minutes", "turn off the alarm",
    ],
    "lights": [
        "turn {on_off} the {room} lights", "turn the {room} lights {on_off}",
        "turn {on_off} the lights in the {room}", "switch {on_off} the {room} lamp",
        "dim the {room} lights", "dim the {room} lights to {percent} percent",
        "set the {room} lights to {percent} percent", "brighten the lights in the {room}",
        "make the {room} lights {color}", "change the {room} lights to {color}",
        "are the {room} lights on", "turn {on_off} all the lights",
    ],
    "music": [
        "play {genre} music", "play some {genre}", "play {genre} in the {room}",
        "play my {playlist} playlist", "shuffle my {playlist} playlist",
        "play my {playlist} playlist in the {room}", "set the volume to {volume}",
        "turn the volume {up_down}", "turn it {up_down} in the {room}", "play the next song",
        "skip this song", "pause the music", "stop the music", "resume the music",
        "what song is this", "play that song again",
    ],
    "weather": [
        "what's the weather {day}", "what's the weather in {city}",
        "what's the weather in {city} {day}", "will it {weather_word} {day}",
        "will it {weather_word} in {city} {day}", "how hot will it be in {city} {day}",
        "how cold is it in {city}", "do i need an umbrella {day}", "do i need a jacket {day}",
        "what's the temperature in {city}",
    ],
    "thermostat": [
        "set the thermostat to {degrees} degrees", "set the heat to {degrees} degrees",
        "set the temperature in the {room} to {degrees} degrees", "turn the heat {up_down}",
        "turn the heat {on_off} in the {room}", "make it warmer in the {room}",
        "make it cooler in the {room}", "what's the temperature in the {room}",
        "turn {on_off} the air conditioning",
    ],
    "clock": [
        "what time is it", "what time is it in {city}", "what's the date today",
        "what day is it {day}", "how many days until {weekday}", "what's the time in {city}",
    ],
    "math": [
        "what's {small} {operation} {small}", "what is {small} {operation} {small}",
        "how much is {small} {operation} {small}",
    ],
    "shopping": [
        "add {item} to my shopping list", "add {count} {item} to my shopping list",
        "put {item} on the shopping list", "remove {item} from my shopping list",
        "do i have {item} on my list", "what's on my shopping list", "clear my shopping list",
    ],
    "reminder": [
        "remind me to {task} at {time}", "remind me to {task} {day}",
        "remind me in {duration} to {task}", "remind me to {task} on {weekday} at {clock}",
        "what are my reminders for {day}", "delete my reminder to {task}",
    ],
}

_SLOT = re.compile(r"\{(\w+)\}")


def expand(template: str) -> List[str]:
    """Every sentence ``template`` can say, slots expanded through ``RULES``.

    >>> expand("turn {on_off} the lights")
    ['turn on the lights', 'turn off the lights']
    """
    parts = _SLOT.split(template)  # literal, slot, literal, slot, ..., literal
    choices = [[literal] if k % 2 == 0 else [s for alt in RULES[literal] for s in expand(alt)]
               for k, literal in enumerate(parts)]
    return ["".join(pieces) for pieces in itertools.product(*choices)]


def intent_sentences() -> Dict[str, List[str]]:
    """Every distinct normalized sentence of each intent, sorted."""
    return {
        intent: sorted({normalize_text(s) for template in templates for s in expand(template)})
        for intent, templates in INTENTS.items()
    }


def sample_sentences(seed: int) -> Dict[str, List[str]]:
    """At most ``MAX_SENTENCES_PER_INTENT`` sentences of each intent, drawn with ``seed``,
    in random order (the order the corpus holds them out and reads them in)."""
    sampled = {}
    for intent, sentences in intent_sentences().items():
        rng = random.Random(f"{seed}/target/sentences/{intent}")
        sampled[intent] = rng.sample(sentences, min(len(sentences), MAX_SENTENCES_PER_INTENT))
    return sampled
