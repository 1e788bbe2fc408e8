"""Short factual questions with the fact a right answer mentions (any of the aliases)."""

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("China", "Beijing"), ("India", "New Delhi"), ("Brazil", "Brasilia|Brasília"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Austria", "Vienna"), ("Ireland", "Dublin"), ("the United Kingdom", "London"), ("Kenya", "Nairobi"),
    ("South Korea", "Seoul"), ("Thailand", "Bangkok"), ("Turkey", "Ankara"), ("Peru", "Lima"),
    ("Cuba", "Havana"), ("Hungary", "Budapest"), ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"),
    ("Switzerland", "Bern"), ("Chile", "Santiago"), ("Colombia", "Bogota|Bogotá"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("Iran", "Tehran"), ("Nigeria", "Abuja"),
]

OTHER = [
    ("How many legs does a spider have?", "eight|8"),
    ("How many days are there in a week?", "seven|7"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What is the chemical symbol for water?", "H2O|H₂O"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the freezing point of water in degrees Celsius?", "0|zero"),
    ("How many continents are there on Earth?", "seven|7"),
    ("What gas do plants absorb from the air?", "carbon dioxide|CO2|CO₂"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the boiling point of water in degrees Celsius?", "100"),
    ("How many hours are there in a day?", "24|twenty-four"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the closest star to Earth?", "Sun"),
    ("How many months are there in a year?", "twelve|12"),
    ("What do bees make?", "honey"),
    ("What is the hardest natural substance?", "diamond"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the main language spoken in Brazil?", "Portuguese"),
    ("How many sides does a triangle have?", "three|3"),
    ("What is the largest mammal?", "blue whale|whale"),
    ("What is the currency of Japan?", "yen"),
    ("Which organ pumps blood through the body?", "heart"),
]


def questions() -> list[tuple[str, tuple[str, ...]]]:
    """(question, aliases of the fact) pairs, 64 of them, in a fixed order."""
    out = [(f"What is the capital of {country}?", tuple(city.split("|"))) for country, city in CAPITALS]
    out += [(q, tuple(a.split("|"))) for q, a in OTHER]
    return out
